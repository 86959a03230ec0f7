//! The host end of a virtio-net device: a tap interface opened through
//! `/dev/net/tun` (created if it does not exist, attached to if it does),
//! carrying a 12-byte virtio-net header before every frame
//! (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, TUNSETVNETHDRSZ), with the receive
//! offloads (TUNSETOFFLOAD) set to what the guest driver accepted.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use thiserror::Error;

/// Size of the virtio-net header we exchange with the tap (`virtio_net_hdr_v1`).
pub const VNET_HDR_LEN: usize = 12;

/// Longest interface name (IFNAMSIZ minus the NUL).
const MAX_NAME_LEN: usize = 15;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `_IOW('T', 216, int)`.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// tun flag: layer-2 device.
const IFF_TAP: i16 = 0x0002;
/// tun flag: no packet information prefix.
const IFF_NO_PI: i16 = 0x1000;
/// tun flag: virtio-net header before every frame.
const IFF_VNET_HDR: i16 = 0x4000;

/// Offload flag: the reader accepts frames with partial checksums.
pub const TUN_F_CSUM: u32 = 0x01;
/// Offload flag: the reader accepts TCPv4 segmentation offload.
pub const TUN_F_TSO4: u32 = 0x02;
/// Offload flag: the reader accepts TCPv6 segmentation offload.
pub const TUN_F_TSO6: u32 = 0x04;

/// Errors opening or configuring a tap.
#[derive(Debug, Error)]
pub enum TapError {
    /// The interface name is empty, too long or has forbidden characters.
    #[error("invalid tap name {0:?}: use 1 to 15 characters, no '/', ':', whitespace or NUL")]
    BadName(String),
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun for tap {name}: {source} (load the tun module; needs CAP_NET_ADMIN)")]
    OpenTun {
        /// Tap name.
        name: String,
        /// The open error.
        #[source]
        source: std::io::Error,
    },
    /// An ioctl on the tap failed.
    #[error("tap {name}: {what} failed: {source}")]
    Ioctl {
        /// Tap name.
        name: String,
        /// Which request.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Duplicating the tap descriptor failed.
    #[error("tap {name}: cannot duplicate the descriptor: {source}")]
    Clone {
        /// Tap name.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// `struct ifreq` with the flags member of the union (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfReqFlags {
    /// Interface name, NUL-padded.
    name: [u8; 16],
    /// ifr_flags.
    flags: i16,
    /// Rest of the union.
    _pad: [u8; 22],
}

impl IfReqFlags {
    /// A request naming `name` (checked to fit) with `flags`.
    fn new(name: &str, flags: i16) -> Self {
        let mut req = IfReqFlags {
            name: [0; 16],
            flags,
            _pad: [0; 22],
        };
        for (dst, src) in req.name.iter_mut().zip(name.bytes().take(MAX_NAME_LEN)) {
            *dst = src;
        }
        req
    }
}

/// An open tap interface.
#[derive(Debug)]
pub struct Tap {
    /// The tun file descriptor (non-blocking).
    file: File,
    /// Interface name.
    name: String,
}

impl Tap {
    /// Opens tap `name` with a virtio-net header, creating it (and bringing
    /// it up) if it does not exist. The descriptor is non-blocking.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        check_name(name)?;
        let existed = std::path::Path::new("/sys/class/net").join(name).exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|source| TapError::OpenTun {
                name: name.to_string(),
                source,
            })?;
        let tap = Tap {
            file,
            name: name.to_string(),
        };
        let mut req = IfReqFlags::new(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` is one
        // (same size and layout for the name and flags) and outlives the call.
        let ret = unsafe { libc::ioctl(tap.file.as_raw_fd(), TUNSETIFF, &mut req) };
        tap.check(ret, "TUNSETIFF")?;
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
        let ret = unsafe { libc::ioctl(tap.file.as_raw_fd(), TUNSETVNETHDRSZ, &hdr_len) };
        tap.check(ret, "TUNSETVNETHDRSZ")?;
        if !existed {
            if let Err(e) = tap.set_up() {
                log::warn!("created tap {name} but could not bring it up: {e}");
            }
        }
        Ok(tap)
    }

    /// Interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the receive offloads (`TUN_F_*`): which kinds of frames the
    /// kernel may hand us without checksumming or segmenting them first.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is shared.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        self.check(ret, "TUNSETOFFLOAD")
    }

    /// Sets IFF_UP on the interface.
    pub fn set_up(&self) -> Result<(), TapError> {
        // SAFETY: plain socket(2) call; the result is checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        self.check(fd, "socket for SIOCSIFFLAGS")?;
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut req = IfReqFlags::new(&self.name, 0);
        // SAFETY: SIOCGIFFLAGS fills the flags of the `struct ifreq` we pass, which outlives the call.
        let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
        self.check(ret, "SIOCGIFFLAGS")?;
        req.flags |= libc::IFF_UP as i16;
        // SAFETY: SIOCSIFFLAGS reads the `struct ifreq` we pass, which outlives the call.
        let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
        self.check(ret, "SIOCSIFFLAGS")
    }

    /// A second descriptor on the same tap (for the worker thread).
    pub fn try_clone(&self) -> Result<Tap, TapError> {
        let file = self.file.try_clone().map_err(|source| TapError::Clone {
            name: self.name.clone(),
            source,
        })?;
        Ok(Tap {
            file,
            name: self.name.clone(),
        })
    }

    /// Reads one frame (header included); `WouldBlock` when none is queued.
    pub fn read_frame(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame (header included).
    pub fn write_frame(&self, buf: &[u8]) -> std::io::Result<usize> {
        (&self.file).write(buf)
    }

    /// Turns a -1 return into an error naming `what`.
    fn check(&self, ret: libc::c_int, what: &'static str) -> Result<(), TapError> {
        if ret < 0 {
            Err(TapError::Ioctl {
                name: self.name.clone(),
                what,
                source: std::io::Error::last_os_error(),
            })
        } else {
            Ok(())
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Checks that `name` is a usable interface name (the rule lives in `config::net`).
pub fn check_name(name: &str) -> Result<(), TapError> {
    crate::config::net::check_tap_name(name).map_err(|_| TapError::BadName(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_syscall() {
        for bad in [
            "",
            "a/b",
            "x y",
            "this-name-is-too-long",
            "..",
            "a:b",
            "a,b",
        ] {
            assert!(
                matches!(check_name(bad), Err(TapError::BadName(_))),
                "{bad:?}"
            );
        }
        for good in ["tap0", "vm-net.1", "t"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        assert!(matches!(Tap::open("no/slash"), Err(TapError::BadName(_))));
    }

    #[test]
    fn ifreq_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
        let req = IfReqFlags::new("tap0", IFF_TAP);
        assert_eq!(&req.name[..5], b"tap0\0");
        assert_eq!(req.flags, IFF_TAP);
    }
}
