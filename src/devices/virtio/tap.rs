//! The host end of a virtio-net device: a tap interface opened through
//! `/dev/net/tun` (created if it does not exist, attached to if it does),
//! carrying a 12-byte virtio-net header before every frame
//! (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, TUNSETVNETHDRSZ), with the receive
//! offloads (TUNSETOFFLOAD) set to what the guest driver accepted. A tap
//! descriptor another process opened (the control API's `vm.add-net` with
//! SCM_RIGHTS) is [`Tap::adopt`]ed and taken by the next open of its name.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use thiserror::Error;

/// Size of the virtio-net header we exchange with the tap (`virtio_net_hdr_v1`).
pub const VNET_HDR_LEN: usize = 12;

/// Longest interface name (IFNAMSIZ minus the NUL).
const MAX_NAME_LEN: usize = 15;
/// tun flag: virtio-net header before every frame (nix has no name for it).
const IFF_VNET_HDR: i16 = 0x4000;

/// The tun and interface-flag ioctls, declared through nix's macros. Each is
/// `unsafe` because the kernel reads (or writes) memory through the argument.
mod ioctls {
    use super::IfReqFlags;
    use nix::sys::ioctl::ioctl_num_type;
    use std::ffi::{c_int, c_uint};
    use std::mem::size_of;

    /// `_IOW('T', 202, int)`, though the argument is a `struct ifreq`.
    pub const TUNSETIFF: ioctl_num_type = nix::request_code_write!(b'T', 202, size_of::<c_int>());
    /// `_IOR('T', 210, unsigned int)`, though the argument is a `struct ifreq`.
    pub const TUNGETIFF: ioctl_num_type = nix::request_code_read!(b'T', 210, size_of::<c_uint>());
    /// `_IOW('T', 208, unsigned int)`, though the argument is passed by value.
    pub const TUNSETOFFLOAD: ioctl_num_type =
        nix::request_code_write!(b'T', 208, size_of::<c_uint>());

    nix::ioctl_readwrite_bad!(
        /// TUNSETIFF: the kernel reads the `struct ifreq` and writes it back.
        tun_set_iff,
        TUNSETIFF,
        IfReqFlags
    );
    nix::ioctl_read_bad!(
        /// TUNGETIFF: the kernel writes the name and flags of the attached interface.
        tun_get_iff,
        TUNGETIFF,
        IfReqFlags
    );
    nix::ioctl_write_int_bad!(
        /// TUNSETOFFLOAD: the `TUN_F_*` flags by value.
        tun_set_offload,
        TUNSETOFFLOAD
    );
    nix::ioctl_write_ptr!(
        /// TUNSETVNETHDRSZ, `_IOW('T', 216, int)`.
        tun_set_vnet_hdr_sz,
        b'T',
        216,
        c_int
    );
    nix::ioctl_readwrite_bad!(
        /// SIOCGIFFLAGS: fills the flags of a `struct ifreq`.
        get_if_flags,
        libc::SIOCGIFFLAGS,
        IfReqFlags
    );
    nix::ioctl_write_ptr_bad!(
        /// SIOCSIFFLAGS: sets the flags of a `struct ifreq`.
        set_if_flags,
        libc::SIOCSIFFLAGS,
        IfReqFlags
    );
}

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
    #[error("cannot open /dev/net/tun for tap {name}: {source} (load the tun module: `modprobe tun`; if permission is denied, as root `chmod 0666 /dev/net/tun`, udev's default mode)")]
    OpenTun {
        /// Tap name.
        name: String,
        /// The open error.
        #[source]
        source: std::io::Error,
    },
    /// TUNSETIFF was refused: creating a tap, or attaching to one the process does
    /// not own, needs CAP_NET_ADMIN.
    #[error("tap {name}: not permitted to create it or attach to it (TUNSETIFF: {source}); without CAP_NET_ADMIN, have root make it for this user first: `ip tuntap add dev {name} mode tap user $USER && ip link set {name} up` (`vfio-vmm host check --user USER --tap {name}` checks it)")]
    NotPermitted {
        /// Tap name.
        name: String,
        /// The OS error.
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
    /// A descriptor handed over is not a usable tap.
    #[error("descriptor {fd} is not a usable tap: {why}")]
    Adopt {
        /// The descriptor.
        fd: RawFd,
        /// What is wrong.
        why: String,
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

/// Tap descriptors handed over by another process, by interface name, for
/// the next [`Tap::open`] of that name.
static ADOPTED: Mutex<BTreeMap<String, File>> = Mutex::new(BTreeMap::new());

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
        let adopted = ADOPTED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(file) = adopted {
            log::info!("tap {name}: using the descriptor handed over");
            return Ok(Tap {
                file,
                name: name.to_string(),
            });
        }
        let existed = std::path::Path::new("/sys/class/net").join(name).exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
            .open("/dev/net/tun")
            .map_err(|source| TapError::OpenTun {
                name: name.to_string(),
                source,
            })?;
        let tap = Tap {
            file,
            name: name.to_string(),
        };
        let tap_flags = (InterfaceFlags::IFF_TAP | InterfaceFlags::IFF_NO_PI).bits() as i16;
        let mut req = IfReqFlags::new(name, tap_flags | IFF_VNET_HDR);
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` is one
        // (same size and layout for the name and flags) and outlives the call.
        unsafe { ioctls::tun_set_iff(tap.file.as_raw_fd(), &mut req) }.map_err(|e| {
            if e == Errno::EPERM {
                TapError::NotPermitted {
                    name: name.to_string(),
                    source: e.into(),
                }
            } else {
                tap.ioctl_err("TUNSETIFF")(e)
            }
        })?;
        let hdr_len = VNET_HDR_LEN as std::ffi::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
        unsafe { ioctls::tun_set_vnet_hdr_sz(tap.file.as_raw_fd(), &hdr_len) }
            .map_err(tap.ioctl_err("TUNSETVNETHDRSZ"))?;
        if !existed {
            if let Err(e) = tap.set_up() {
                log::warn!("created tap {name} but could not bring it up: {e}");
            }
        }
        Ok(tap)
    }

    /// Keeps `fd`, a tap opened elsewhere with IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR (as Kata opens them), for the next [`Tap::open`] of its
    /// interface; returns the interface's name.
    pub fn adopt(fd: OwnedFd) -> Result<String, TapError> {
        let raw = fd.as_raw_fd();
        let bad = |why: String| TapError::Adopt { fd: raw, why };
        let mut req = IfReqFlags::new("", 0);
        // SAFETY: TUNGETIFF writes a `struct ifreq`; `req` is one (same size
        // and layout for the name and flags) and outlives the call.
        unsafe { ioctls::tun_get_iff(raw, &mut req) }
            .map_err(|e| bad(format!("TUNGETIFF failed: {e} (not a tun/tap descriptor)")))?;
        let want =
            (InterfaceFlags::IFF_TAP | InterfaceFlags::IFF_NO_PI).bits() as i16 | IFF_VNET_HDR;
        if req.flags & want != want {
            return Err(bad(format!(
                "flags {:#x} lack IFF_TAP, IFF_NO_PI or IFF_VNET_HDR",
                req.flags
            )));
        }
        let len = req
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(req.name.len());
        let name = String::from_utf8_lossy(&req.name[..len]).into_owned();
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| bad(format!("F_GETFL failed: {e}")))?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(|e| bad(format!("cannot make it non-blocking: {e}")))?;
        let hdr_len = VNET_HDR_LEN as std::ffi::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
        unsafe { ioctls::tun_set_vnet_hdr_sz(raw, &hdr_len) }
            .map_err(|e| bad(format!("TUNSETVNETHDRSZ failed: {e}")))?;
        let mut adopted = ADOPTED.lock().unwrap_or_else(|p| p.into_inner());
        adopted.insert(name.clone(), File::from(fd));
        Ok(name)
    }

    /// Interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the receive offloads (`TUN_F_*`): which kinds of frames the
    /// kernel may hand us without checksumming or segmenting them first.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is shared.
        unsafe { ioctls::tun_set_offload(self.file.as_raw_fd(), flags as std::ffi::c_int) }
            .map(drop)
            .map_err(self.ioctl_err("TUNSETOFFLOAD"))
    }

    /// Sets IFF_UP on the interface.
    pub fn set_up(&self) -> Result<(), TapError> {
        let sock = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(self.ioctl_err("socket for SIOCSIFFLAGS"))?;
        let mut req = IfReqFlags::new(&self.name, 0);
        // SAFETY: SIOCGIFFLAGS fills the flags of the `struct ifreq` we pass, which outlives the call.
        unsafe { ioctls::get_if_flags(sock.as_raw_fd(), &mut req) }
            .map_err(self.ioctl_err("SIOCGIFFLAGS"))?;
        req.flags |= InterfaceFlags::IFF_UP.bits() as i16;
        // SAFETY: SIOCSIFFLAGS reads the `struct ifreq` we pass, which outlives the call.
        unsafe { ioctls::set_if_flags(sock.as_raw_fd(), &req) }
            .map(drop)
            .map_err(self.ioctl_err("SIOCSIFFLAGS"))
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

    /// Turns a failed request's errno into an error naming `what`.
    fn ioctl_err(&self, what: &'static str) -> impl FnOnce(Errno) -> TapError + '_ {
        move |errno| TapError::Ioctl {
            name: self.name.clone(),
            what,
            source: errno.into(),
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
    #[ignore = "needs root and /dev/net/tun for a tap (scripts/test.sh runs it)"]
    fn an_adopted_descriptor_is_taken_by_the_next_open_of_its_tap() {
        let name = format!("vva{}", std::process::id() % 100_000);
        let first = Tap::open(&name).unwrap();
        let fd = OwnedFd::from(first.file.try_clone().unwrap());
        assert_eq!(Tap::adopt(fd).unwrap(), name);
        let adopted = Tap::open(&name).unwrap();
        assert_eq!(adopted.name(), name);
        // Without an adopted descriptor, the attached tap cannot be opened again.
        assert!(matches!(Tap::open(&name), Err(TapError::Ioctl { .. })));
        let file = OwnedFd::from(File::open("/dev/null").unwrap());
        let err = Tap::adopt(file).unwrap_err().to_string();
        assert!(err.contains("not a tun/tap descriptor"), "{err}");
        drop((first, adopted));
    }

    #[test]
    fn tun_requests_have_the_kernel_numbers() {
        assert_eq!(ioctls::TUNGETIFF, 0x8004_54d2);
        assert_eq!(ioctls::TUNSETIFF, 0x4004_54ca);
        assert_eq!(ioctls::TUNSETOFFLOAD, 0x4004_54d0);
    }

    #[test]
    fn ifreq_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
        let req = IfReqFlags::new("tap0", IFF_VNET_HDR);
        assert_eq!(&req.name[..5], b"tap0\0");
        assert_eq!(req.flags, IFF_VNET_HDR);
    }
}
