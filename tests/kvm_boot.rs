//! Host-KVM tests of how a guest starts and keeps time: the PIT's tick
//! reinjection policy (`--pit reinject=on|off`) observed by a real-mode
//! payload, and a PVH boot of a tiny hand-made ELF through the builder. They
//! need /dev/kvm, so a plain `cargo test` lists them as ignored;
//! `scripts/test.sh` runs them, and each fails saying why where /dev/kvm is
//! not usable.

use std::io::Write;
use std::sync::{Arc, Mutex};

use vfio_vmm::config::{MemoryConfig, PitConfig};
use vfio_vmm::exit::ExitReason;
use vfio_vmm::vmm::Machine;
use vm_memory::{Bytes, GuestAddress};

/// A console sink the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails the test, saying why, if /dev/kvm cannot be opened.
fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!(
            "/dev/kvm is not usable here ({e}); this test needs /dev/kvm (scripts/test.sh runs it)"
        );
    }
}

/// Real-mode code at 0x1000 counting PIT interrupts. It points IVT vector
/// 0x20 at a handler (`incw [count]; EOI; iret`), initialises the PIC (base
/// 0x20, only IRQ0 unmasked) and the PIT (channel 0, mode 2, divisor 1193:
/// 1000 Hz); then it spins with interrupts off for CLI_CYCLES TSC cycles
/// (the placeholder 0x11111111), with interrupts on for STI_CYCLES
/// (0x22222222), and writes the 16-bit count to COM1 and powers off.
/// Assembled with GNU as (`.code16`, linked at 0x1000).
const PIT_COUNTER: [u8; 128] = [
    0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00,
    0x80, // cli; ds = ss = 0; sp = 0x8000
    0xc7, 0x06, 0x80, 0x00, 0x73, 0x10, // IVT[0x20].offset = handler (0x1073)
    0xc7, 0x06, 0x82, 0x00, 0x00, 0x00, // IVT[0x20].segment = 0
    0xc7, 0x06, 0x7e, 0x10, 0x00, 0x00, // count = 0
    0xb0, 0x11, 0xe6, 0x20, 0xb0, 0x20, 0xe6, 0x21, // ICW1, ICW2 (vector base 0x20)
    0xb0, 0x04, 0xe6, 0x21, 0xb0, 0x01, 0xe6, 0x21, // ICW3, ICW4
    0xb0, 0xfe, 0xe6, 0x21, // OCW1: only IRQ0 unmasked
    0xb0, 0x34, 0xe6, 0x43, // PIT channel 0, lo/hi, mode 2
    0xb0, 0xa9, 0xe6, 0x40, 0xb0, 0x04, 0xe6, 0x40, // divisor 0x04a9
    0x0f, 0x31, 0x66, 0x89, 0xc3, // rdtsc; ebx = eax
    0x0f, 0x31, 0x66, 0x29, 0xd8, // 1: rdtsc; eax -= ebx
    0x66, 0x3d, 0x11, 0x11, 0x11, 0x11, 0x72, 0xf3, // cmp eax, CLI_CYCLES; jb 1b
    0xfb, 0x0f, 0x31, 0x66, 0x89, 0xc3, // sti; rdtsc; ebx = eax
    0x0f, 0x31, 0x66, 0x29, 0xd8, // 2: rdtsc; eax -= ebx
    0x66, 0x3d, 0x22, 0x22, 0x22, 0x22, 0x72, 0xf3, // cmp eax, STI_CYCLES; jb 2b
    0xfa, 0xa1, 0x7e, 0x10, // cli; ax = count
    0xba, 0xf8, 0x03, 0xee, 0x88, 0xe0, 0xee, // out COM1, al; out COM1, ah
    0xba, 0x00, 0x06, 0xb0, 0x34, 0xee, 0xf4, // ACPI sleep control = S5 | SLP_EN; hlt
    0xff, 0x06, 0x7e, 0x10, // handler: incw count
    0x50, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0xcf, // push ax; EOI to the PIC; pop ax; iret
    0x00, 0x00, // count
];

/// Replaces the 4-byte placeholder `from` in `code` with `to`.
fn patch(code: &mut [u8], from: u32, to: u32) {
    let at = code
        .windows(4)
        .position(|w| w == from.to_le_bytes())
        .expect("placeholder in the payload");
    code[at..at + 4].copy_from_slice(&to.to_le_bytes());
}

/// Runs [`PIT_COUNTER`] with the PIT set up by `pit`: interrupts off for
/// `off_ms`, then on for `on_ms`. Returns the interrupts the guest counted.
fn count_pit_interrupts(pit: PitConfig, off_ms: u32, on_ms: u32) -> u16 {
    let out = Captured::default();
    let mem = MemoryConfig {
        size: 64 << 20,
        hugepages: false,
        mergeable: false,
    };
    let machine = Machine::new(&mem, 1, Vec::new(), Box::new(out.clone())).expect("machine");
    machine.set_pit(&pit).expect("KVM_REINJECT_CONTROL");
    let vcpu = machine.vcpus()[0].fd();
    let tsc_khz = vcpu.get_tsc_khz().expect("KVM_GET_TSC_KHZ");
    let mut code = PIT_COUNTER.to_vec();
    patch(&mut code, 0x1111_1111, tsc_khz * off_ms);
    patch(&mut code, 0x2222_2222, tsc_khz * on_ms);
    machine
        .memory()
        .write_slice(&code, GuestAddress(0x1000))
        .unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    (sregs.cs.base, sregs.cs.selector) = (0, 0);
    vcpu.set_sregs(&sregs).unwrap();
    let regs = kvm_bindings::kvm_regs {
        rip: 0x1000,
        rflags: 2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).unwrap();
    assert_eq!(machine.run().unwrap(), ExitReason::PowerOff);
    let bytes = out.0.lock().unwrap().clone();
    assert_eq!(bytes.len(), 2, "the guest reports its count: {bytes:?}");
    u16::from_le_bytes([bytes[0], bytes[1]])
}

/// KVM offers no way to read the reinjection flag back (KVM_GET_PIT2's flags
/// carry only HPET_LEGACY and the speaker), so this observes what it does:
/// 200 ms with interrupts off, then 500 ms on, at 1000 ticks a second.
/// Without reinjection the missed ticks collapse into the one the PIC
/// latched: ~500 interrupts. With it KVM queues the ~200 missed ticks and
/// delivers them after `sti`, one after each EOI, on top of the new ones:
/// up to ~700 (how fast the backlog drains depends on the host; 0.5 to 2
/// per millisecond were seen under nested KVM, so all of it drains).
#[test]
#[ignore = "needs /dev/kvm (scripts/test.sh runs it)"]
fn pit_reinject_setting_reaches_kvm() {
    require_kvm();
    let on = count_pit_interrupts(PitConfig { reinject: true }, 200, 500);
    let off = count_pit_interrupts(PitConfig { reinject: false }, 200, 500);
    assert!(
        (250..=560).contains(&off),
        "reinject=off: {off} interrupts, ~500 expected"
    );
    assert!(
        on >= off + 100,
        "reinject=on: {on} interrupts, ~700 expected (off gave {off})"
    );
}
