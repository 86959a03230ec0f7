//! Host-KVM tests of how a guest starts and keeps time: the PIT's tick
//! reinjection policy (`--pit reinject=on|off`) observed by a real-mode
//! payload, and a PVH boot of a tiny hand-made ELF through the builder. They
//! need /dev/kvm, so a plain `cargo test` lists them as ignored;
//! `scripts/test.sh` runs them, and each fails saying why where /dev/kvm is
//! not usable.

use std::path::PathBuf;

use vfio_vmm::config::{MemoryConfig, PayloadConfig, PitConfig, SerialConfig, VmConfig};
use vfio_vmm::exit::ExitReason;
use vfio_vmm::{builder, layout};

mod common;
use common::{load, machine_with, require_kvm};

/// Real-mode code at 0x1000 that tells whether PIT ticks it missed were
/// delivered late. It points IVT vector 0x20 at a handler (`incw [count];
/// EOI; iret`), initialises the PIC (base 0x20, only IRQ0 unmasked) and the
/// PIT (channel 0, mode 2, divisor 1193: 1000 Hz), and keeps interrupts off
/// for CLI_MS milliseconds (placeholder 0x11111111; time from the TSC at
/// TSC_KHZ, placeholder 0x33333333). Then, interrupts on, it waits until it
/// has counted as many interrupts as the PIT fired since it was started (one
/// a millisecond, 10 of slack): it writes `C` (caught up) and stops there, or
/// `T` once CAP_MS (placeholder 0x22222222) have passed since the start. Then
/// the 16-bit count to COM1, and power off. Assembled with GNU as
/// (`.code16`, linked at 0x1000).
const PIT_CATCH_UP: [u8; 164] = [
    0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00,
    0x80, // cli; ds = ss = 0; sp = 0x8000
    0xc7, 0x06, 0x80, 0x00, 0x97, 0x10, // IVT[0x20].offset = handler (0x1097)
    0xc7, 0x06, 0x82, 0x00, 0x00, 0x00, // IVT[0x20].segment = 0
    0xc7, 0x06, 0xa2, 0x10, 0x00, 0x00, // count = 0
    0xb0, 0x11, 0xe6, 0x20, 0xb0, 0x20, 0xe6, 0x21, // ICW1, ICW2 (vector base 0x20)
    0xb0, 0x04, 0xe6, 0x21, 0xb0, 0x01, 0xe6, 0x21, // ICW3, ICW4
    0xb0, 0xfe, 0xe6, 0x21, // OCW1: only IRQ0 unmasked
    0xb0, 0x34, 0xe6, 0x43, // PIT channel 0, lo/hi, mode 2
    0xb0, 0xa9, 0xe6, 0x40, 0xb0, 0x04, 0xe6, 0x40, // divisor 0x04a9
    0x0f, 0x31, 0x66, 0x89, 0xc6, 0x66, 0x89, 0xd7, // rdtsc; edi:esi = start
    0xe8, 0x3e, 0x00, // 1: call elapsed_ms
    0x66, 0x3d, 0x11, 0x11, 0x11, 0x11, 0x72, 0xf5, // cmp eax, CLI_MS; jb 1b
    0xfb, 0xe8, 0x32, 0x00, // sti; 2: call elapsed_ms
    0x66, 0x3d, 0x22, 0x22, 0x22, 0x22, 0x73, 0x13, // cmp eax, CAP_MS; jae timeout
    0x66, 0x0f, 0xb7, 0x1e, 0xa2, 0x10, // movzx ebx, word [count]
    0x66, 0x83, 0xc3, 0x0a, 0x66, 0x39, 0xc3, 0x72, 0xe6, // add ebx, 10; cmp ebx, eax; jb 2b
    0xb1, 0x43, 0xeb, 0x02, // cl = 'C'; jmp report
    0xb1, 0x54, // timeout: cl = 'T'
    0xfa, 0xba, 0xf8, 0x03, 0x88, 0xc8, 0xee, // report: cli; out COM1, cl
    0xa1, 0xa2, 0x10, 0xee, 0x88, 0xe0, 0xee, // ax = count; out COM1, al; out COM1, ah
    0xba, 0x00, 0x06, 0xb0, 0x34, 0xee, 0xf4, // ACPI sleep control = S5 | SLP_EN; hlt
    0x0f, 0x31, 0x66, 0x29, 0xf0, 0x66, 0x19, 0xfa, // elapsed_ms: rdtsc; edx:eax -= edi:esi
    0x66, 0xb9, 0x33, 0x33, 0x33, 0x33, // mov ecx, TSC_KHZ
    0x66, 0xf7, 0xf1, 0xc3, // div ecx (eax = milliseconds); ret
    0xff, 0x06, 0xa2, 0x10, // handler: incw count
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

/// Runs [`PIT_CATCH_UP`] with the PIT set up by `pit`: interrupts off for
/// `cli_ms`, a verdict by `cap_ms`. Returns whether the guest caught up
/// with the PIT, and the interrupts it counted.
fn pit_catch_up(pit: PitConfig, cli_ms: u32, cap_ms: u32) -> (bool, u16) {
    let (machine, out) = machine_with(&[]);
    machine.set_pit(&pit).expect("KVM_REINJECT_CONTROL");
    let tsc_khz = machine.vcpus()[0]
        .fd()
        .get_tsc_khz()
        .expect("KVM_GET_TSC_KHZ");
    let mut code = PIT_CATCH_UP.to_vec();
    patch(&mut code, 0x1111_1111, cli_ms);
    patch(&mut code, 0x2222_2222, cap_ms);
    patch(&mut code, 0x3333_3333, tsc_khz);
    load(&machine, &code);
    assert_eq!(machine.run().unwrap(), ExitReason::PowerOff);
    let bytes = out.0.lock().unwrap().clone();
    match bytes[..] {
        [verdict @ (b'C' | b'T'), lo, hi] => (verdict == b'C', u16::from_le_bytes([lo, hi])),
        _ => panic!("the guest reports a verdict and its count, not {bytes:?}"),
    }
}

/// KVM offers no way to read the reinjection flag back (KVM_GET_PIT2's flags
/// carry only HPET_LEGACY and the speaker), so this observes what it does.
/// The guest misses the first 200 ticks (interrupts off), then waits to have
/// counted as many interrupts as the PIT fired. With reinjection KVM queued
/// the missed ticks and delivers them, one after each EOI, faster than new
/// ones come: the guest catches up (in a few hundred milliseconds here).
/// Without, the missed ticks collapsed into the one the PIC latched, and
/// ticks missed while the vCPU thread waits for a host CPU are lost too: the
/// guest stays at least ~200 behind and never catches up. Counts alone would
/// not do: on a busy host both runs lose time to scheduling.
#[test]
#[ignore = "needs /dev/kvm (scripts/test.sh runs it)"]
fn pit_reinject_setting_reaches_kvm() {
    require_kvm();
    let (caught_up, count) = pit_catch_up(PitConfig { reinject: true }, 200, 5000);
    assert!(
        caught_up,
        "reinject=on: {count} interrupts in 5 s, fewer than the PIT fired"
    );
    let (caught_up, count) = pit_catch_up(PitConfig { reinject: false }, 200, 2000);
    assert!(
        !caught_up,
        "reinject=off: the guest caught up ({count} interrupts): missed ticks were delivered"
    );
    assert!(
        count > 0,
        "reinject=off: no PIT interrupt reached the guest"
    );
}

/// 32-bit code at 1 MiB, the PVH entry of [`pvh_elf`]. If EBX points at a
/// start info with the PVH magic and CR0 has PE set and PG clear, it writes
/// to COM1 the command line, `|`, the bytes of the one module (the
/// initramfs), `|`, the 8-byte signature at the RSDP address, `|`, and the
/// number of memory map entries as a digit; otherwise `!`. Then it powers
/// off. It uses no stack. Assembled with GNU as (`.code32`, linked at 1 MiB).
const PVH_PROBE: [u8; 94] = [
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0x81, 0x3b, 0x78, 0xc5, 0x6e, 0x33, 0x75, 0x47, // cmp dword [ebx], magic; jne fail
    0x0f, 0x20, 0xc0, 0x25, 0x01, 0x00, 0x00, 0x80, // mov eax, cr0; and eax, PG | PE
    0x83, 0xf8, 0x01, 0x75, 0x3a, // cmp eax, PE; jne fail
    0x8b, 0x73, 0x18, // mov esi, [ebx + cmdline_paddr]
    0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb,
    0xf8, // 1: lodsb; test al, al; jz 2f; out; jmp 1b
    0xb0, 0x7c, 0xee, // 2: out '|'
    0x83, 0x7b, 0x0c, 0x01, 0x75, 0x26, // cmp dword [ebx + nr_modules], 1; jne fail
    0x8b, 0x7b, 0x10, // mov edi, [ebx + modlist_paddr]
    0x8b, 0x37, 0x8b, 0x4f, 0x08, // mov esi, [edi + paddr]; mov ecx, [edi + size]
    0xac, 0xee, 0xe2, 0xfc, // 3: lodsb; out; loop 3b
    0xb0, 0x7c, 0xee, // out '|'
    0x8b, 0x73, 0x20, 0xb9, 0x08, 0x00, 0x00, 0x00, // mov esi, [ebx + rsdp_paddr]; mov ecx, 8
    0xac, 0xee, 0xe2, 0xfc, // 4: lodsb; out; loop 4b
    0xb0, 0x7c, 0xee, // out '|'
    0x8b, 0x43, 0x30, 0x04, 0x30, 0xee, // mov eax, [ebx + memmap_entries]; add al, '0'; out
    0xeb, 0x03, // jmp off
    0xb0, 0x21, 0xee, // fail: out '!'
    0x66, 0xba, 0x00, 0x06, 0xb0, 0x34, 0xee,
    0xf4, // off: ACPI sleep control = S5 | SLP_EN; hlt
];

/// An x86-64 ELF executable (the shape of a vmlinux) with [`PVH_PROBE`] loaded
/// at 1 MiB and a PT_NOTE segment holding a GNU build-id note and the Xen
/// PVH note (type 18, an 8-byte descriptor as Linux writes it) naming 1 MiB.
fn pvh_elf() -> Vec<u8> {
    let mut notes = Vec::new();
    for (name, kind, desc) in [
        (&b"GNU\0"[..], 3u32, &[0xab; 20][..]),
        (b"Xen\0", 18, &0x10_0000u64.to_le_bytes()),
    ] {
        for n in [name.len() as u32, desc.len() as u32, kind] {
            notes.extend_from_slice(&n.to_le_bytes());
        }
        notes.extend_from_slice(name);
        notes.extend_from_slice(desc);
    }
    let mut f = vec![0u8; 64];
    f[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00"); // ELF64, little-endian, v1
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    let phdr = |kind: u32, offset: u64, addr: u64, size: u64| {
        let mut p = vec![0u8; 56];
        p[..4].copy_from_slice(&kind.to_le_bytes());
        p[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        for (o, v) in [(8, offset), (16, addr), (24, addr), (32, size), (40, size)] {
            p[o..o + 8].copy_from_slice(&v.to_le_bytes());
        }
        p
    };
    let notes_at = 64 + 2 * 56;
    f.extend(phdr(4, notes_at, 0, notes.len() as u64)); // PT_NOTE
    f.extend(phdr(1, 0x1000, 0x10_0000, PVH_PROBE.len() as u64)); // PT_LOAD
    f.extend(&notes);
    f.resize(0x1000, 0);
    f.extend_from_slice(&PVH_PROBE);
    f
}

/// A file under the temporary directory for this test, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, contents: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("vfio-vmm-boot-{}-{tag}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The tiny vmlinux goes through the whole `run` path: validation takes it
/// for a PVH kernel, the builder loads it with linux-loader's ELF loader,
/// writes the start info, ACPI tables and PVH CPU state, and the vCPU runs it.
#[test]
#[ignore = "needs /dev/kvm (scripts/test.sh runs it)"]
fn a_pvh_vmlinux_boots_with_its_start_info() {
    require_kvm();
    let kernel = TempFile::new("vmlinux", &pvh_elf());
    let initramfs = TempFile::new("initrd", b"INITRAMFS-BYTES");
    let serial = TempFile::new("serial", b"");
    let config = VmConfig {
        payload: PayloadConfig {
            kernel: kernel.0.clone(),
            initramfs: Some(initramfs.0.clone()),
            cmdline: "console=ttyS0 pvh-probe".into(),
        },
        cpus: 1,
        memory: MemoryConfig::parse("128M").unwrap(),
        serial: SerialConfig::File(serial.0.clone()),
        devices: Vec::new(),
        net: Vec::new(),
        disks: Vec::new(),
        vsock: None,
        rng: None,
        pit: PitConfig::default(),
    };
    config.validate().expect("a PVH vmlinux is a valid kernel");
    let sysfs = iommu::sysfs::Sysfs::new("/");
    let machine = builder::build(&config, &sysfs).expect("build");
    assert_eq!(machine.run().unwrap(), ExitReason::PowerOff);
    let out = String::from_utf8(std::fs::read(&serial.0).unwrap()).unwrap();
    let entries = layout::e820_map(&layout::ram_regions(128 << 20)).len();
    assert_eq!(
        out,
        format!("console=ttyS0 pvh-probe|INITRAMFS-BYTES|RSD PTR |{entries}")
    );
}
