//! COM1: the 16550 UART (vm-superio) on port 0x3f8, its interrupt delivered
//! by an irqfd, output to stdout or a file (watched for a guest kernel panic),
//! input from stdin.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use acpi_tables::aml::{Device, EISAName, Interrupt, Name, ResourceTemplate, IO};
use acpi_tables::Aml;

use super::BusDevice;
use crate::exit::{ExitHandle, ExitReason};
use crate::layout::{SERIAL_IRQ, SERIAL_PORT};

/// What Linux prints first when it panics.
const PANIC_MARKER: &[u8] = b"Kernel panic - not syncing";

/// Raises the UART's interrupt by signalling its irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The console sink: passes bytes through and reports a guest panic.
pub struct ConsoleOut {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    exit: Arc<ExitHandle>,
}

impl ConsoleOut {
    /// Writes to `out`; a panic line requests [`ExitReason::GuestPanic`] on `exit`.
    pub fn new(out: Box<dyn Write + Send>, exit: Arc<ExitHandle>) -> Self {
        ConsoleOut {
            out,
            line: Vec::new(),
            exit,
        }
    }

    fn watch(&mut self, byte: u8) {
        if byte == b'\n' {
            self.line.clear();
            return;
        }
        if self.line.len() < 256 {
            self.line.push(byte);
        }
        if self.line.ends_with(PANIC_MARKER) {
            self.exit.request(ExitReason::GuestPanic);
        }
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        buf.iter().for_each(|&b| self.watch(b));
        self.out.write_all(buf)?;
        self.out.flush()?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The UART as a port-bus device.
pub struct SerialDevice {
    uart: Serial<IrqTrigger, NoEvents, ConsoleOut>,
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: EventFd, out: ConsoleOut) -> Self {
        SerialDevice {
            uart: Serial::new(IrqTrigger(irq), out),
        }
    }

    /// Queues guest input; returns how many bytes fit in the FIFO.
    pub fn enqueue(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Ok(off), [first, rest @ ..]) = (u8::try_from(offset), data) {
            *first = self.uart.read(off);
            rest.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), Some(&value)) = (u8::try_from(offset), data.first()) {
            if let Err(e) = self.uart.write(off, value) {
                log::warn!("serial: {e:?}");
            }
        }
    }
}

/// COM1 as a DSDT device (PNP0501). With hardware-reduced ACPI Linux has no
/// legacy PIC, so only a UART that ACPI describes gets its interrupt mapped.
pub fn dsdt_aml() -> Vec<u8> {
    let hid = EISAName::new("PNP0501");
    let uid = 0u8;
    let irq = Interrupt::new(true, true, false, false, SERIAL_IRQ);
    let ports = IO::new(SERIAL_PORT, SERIAL_PORT, 1, 8);
    let crs = ResourceTemplate::new(vec![&ports, &irq]);
    let names = [
        Name::new("_HID".into(), &hid),
        Name::new("_UID".into(), &uid),
        Name::new("_CRS".into(), &crs),
    ];
    let com1 = Device::new(
        "_SB_.COM1".into(),
        names.iter().map(|n| n as &dyn Aml).collect(),
    );
    let mut bytes = Vec::new();
    com1.to_aml_bytes(&mut bytes);
    bytes
}

/// What the stdin reader may call: read stdin, sleep while the UART is full.
pub fn stdin_reader_syscalls() -> crate::seccomp::AllowList {
    crate::seccomp::base().calls(&[libc::SYS_read])
}

/// Feeds stdin to the UART until EOF, on its own thread.
pub fn spawn_stdin_reader(serial: Arc<Mutex<SerialDevice>>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("serial-in".into())
        .spawn(move || {
            crate::seccomp::enter(crate::seccomp::ThreadKind::SerialIn);
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin().lock();
            while let Ok(n @ 1..) = stdin.read(&mut buf) {
                let mut pending = &buf[..n];
                while !pending.is_empty() {
                    let taken = serial
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .enqueue(pending);
                    pending = &pending[taken..];
                    if !pending.is_empty() {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn serial() -> (SerialDevice, Arc<Mutex<Vec<u8>>>, Arc<ExitHandle>, EventFd) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let exit = Arc::new(ExitHandle::new().unwrap());
        let irq = EventFd::new(0).unwrap();
        let dev = SerialDevice::new(
            irq.try_clone().unwrap(),
            ConsoleOut::new(Box::new(Shared(out.clone())), exit.clone()),
        );
        (dev, out, exit, irq)
    }

    #[test]
    fn guest_bytes_reach_the_console() {
        let (mut dev, out, exit, _) = serial();
        for b in b"hello\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(&*out.lock().unwrap(), b"hello\n");
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn a_panic_line_requests_a_failing_exit() {
        let (mut dev, _, exit, _) = serial();
        for b in b"[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(exit.reason(), Some(ExitReason::GuestPanic));
    }

    #[test]
    fn input_is_readable_and_raises_the_interrupt() {
        let (mut dev, _, _, irq) = serial();
        dev.write(1, &[0x01]); // IER: received-data interrupt
        assert_eq!(dev.enqueue(b"ab"), 2);
        let mut b = [0u8; 1];
        dev.read(0, &mut b);
        assert_eq!(b, [b'a']);
        assert!(irq.read().unwrap() >= 1);
    }
}
