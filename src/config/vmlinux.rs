//! The checks an ELF kernel passes before it is booted by the PVH protocol:
//! a little-endian ELF64 for x86-64 whose PT_NOTE segments hold a Xen note of
//! type `XEN_ELFNOTE_PHYS32_ENTRY` (18), the 32-bit entry point. Linux has it
//! with CONFIG_PVH=y. linux-loader loads the same file later; these checks
//! only make a wrong file fail first, with a message that says what to pass.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::ConfigError;

/// The first four bytes of every ELF file.
pub const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
/// The longest command line a PVH Linux takes (COMMAND_LINE_SIZE).
pub const CMDLINE_MAX: usize = 2048;
/// `e_ident[EI_CLASS]` of a 64-bit ELF.
const ELFCLASS64: u8 = 2;
/// `e_ident[EI_DATA]` of a little-endian ELF.
const ELFDATA2LSB: u8 = 1;
/// `e_machine` of x86-64.
const EM_X86_64: u16 = 62;
/// Program header type of a note segment.
const PT_NOTE: u32 = 4;
/// Size of an ELF64 file header and program header.
const EHDR_LEN: usize = 64;
const PHDR_LEN: usize = 56;
/// The note type carrying the PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Note segments larger than this are not a kernel's (Linux's are a few hundred bytes).
const MAX_NOTES: u64 = 1 << 20;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32_at(b, o)) | u64::from(u32_at(b, o + 4)) << 32
}

/// Checks that `file`, opened from `path`, is an x86-64 vmlinux with a PVH entry note.
pub fn check(path: &Path, file: &mut File) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::BadVmlinux {
        path: path.into(),
        why: why.into(),
    };
    match find_pvh_entry(file) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(bad(
            "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); Linux has it with CONFIG_PVH=y",
        )),
        Err(why) => Err(bad(why)),
    }
}

/// The PVH entry point of the ELF in `file`, `None` without the note; an
/// error says what is wrong with the file.
pub fn find_pvh_entry(file: &mut File) -> Result<Option<u32>, &'static str> {
    let mut ehdr = [0u8; EHDR_LEN];
    file.read_exact(&mut ehdr)
        .map_err(|_| "too short for an ELF64 header")?;
    if ehdr[..4] != ELF_MAGIC {
        return Err("no ELF magic");
    }
    if ehdr[4] != ELFCLASS64 || ehdr[5] != ELFDATA2LSB {
        return Err("not a little-endian 64-bit ELF");
    }
    if u16_at(&ehdr, 18) != EM_X86_64 {
        return Err("built for another machine than x86-64");
    }
    if usize::from(u16_at(&ehdr, 54)) != PHDR_LEN {
        return Err("unexpected program header size");
    }
    let (phoff, phnum) = (u64_at(&ehdr, 32), u16_at(&ehdr, 56));
    for i in 0..u64::from(phnum) {
        let mut phdr = [0u8; PHDR_LEN];
        file.seek(SeekFrom::Start(phoff.saturating_add(i * PHDR_LEN as u64)))
            .and_then(|_| file.read_exact(&mut phdr))
            .map_err(|_| "program headers past the end of the file")?;
        if u32_at(&phdr, 0) != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(&phdr, 8), u64_at(&phdr, 32));
        if size > MAX_NOTES {
            return Err("a note segment larger than 1 MiB");
        }
        let mut notes = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut notes))
            .map_err(|_| "a note segment past the end of the file")?;
        if let Some(entry) = pvh_note(&notes) {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// The entry point in a `Xen` note of type 18 among `notes`, if one is there.
fn pvh_note(notes: &[u8]) -> Option<u32> {
    let align4 = |n: u32| (n as usize).checked_add(3).map(|n| n & !3);
    let mut at = 0usize;
    while let Some(hdr) = notes.get(at..at.checked_add(12)?) {
        let (namesz, descsz, kind) = (u32_at(hdr, 0), u32_at(hdr, 4), u32_at(hdr, 8));
        let name_at = at + 12;
        let desc_at = name_at.checked_add(align4(namesz)?)?;
        let name = notes.get(name_at..name_at.checked_add(namesz as usize)?)?;
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && name == b"Xen\0" && descsz >= 4 {
            return notes.get(desc_at..desc_at + 4).map(|d| u32_at(d, 0));
        }
        at = desc_at.checked_add(align4(descsz)?)?;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal x86-64 ELF: one PT_NOTE segment holding `notes` (each
    /// (name, type, descriptor)), one PT_LOAD of `code` at 1 MiB.
    pub(crate) fn elf(machine: u16, notes: &[(&[u8], u32, &[u8])], code: &[u8]) -> Vec<u8> {
        let pad = |v: &mut Vec<u8>| v.resize(v.len().next_multiple_of(4), 0);
        let mut note_bytes = Vec::new();
        for (name, kind, desc) in notes {
            for n in [name.len() as u32, desc.len() as u32, *kind] {
                note_bytes.extend_from_slice(&n.to_le_bytes());
            }
            note_bytes.extend_from_slice(name);
            pad(&mut note_bytes);
            note_bytes.extend_from_slice(desc);
            pad(&mut note_bytes);
        }
        let notes_at = (EHDR_LEN + 2 * PHDR_LEN) as u64;
        let code_at = 0x1000u64;
        let mut f = vec![0u8; EHDR_LEN];
        f[..4].copy_from_slice(&ELF_MAGIC);
        (f[4], f[5], f[6]) = (ELFCLASS64, ELFDATA2LSB, 1);
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&machine.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
        f[32..40].copy_from_slice(&(EHDR_LEN as u64).to_le_bytes());
        f[52..54].copy_from_slice(&(EHDR_LEN as u16).to_le_bytes());
        f[54..56].copy_from_slice(&(PHDR_LEN as u16).to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        let phdr = |kind: u32, offset: u64, addr: u64, size: u64| {
            let mut p = vec![0u8; PHDR_LEN];
            p[..4].copy_from_slice(&kind.to_le_bytes());
            p[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
            for (o, v) in [(8, offset), (16, addr), (24, addr), (32, size), (40, size)] {
                p[o..o + 8].copy_from_slice(&v.to_le_bytes());
            }
            p
        };
        f.extend(phdr(PT_NOTE, notes_at, 0, note_bytes.len() as u64));
        f.extend(phdr(1, code_at, 0x10_0000, code.len() as u64));
        f.extend(&note_bytes);
        f.resize(code_at as usize, 0);
        f.extend_from_slice(code);
        f
    }

    fn check_bytes(name: &str, bytes: &[u8]) -> Result<(), ConfigError> {
        let path = std::env::temp_dir().join(format!("vfio-vmm-elf-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let result = check(&path, &mut File::open(&path).unwrap());
        std::fs::remove_file(path).unwrap();
        result
    }

    #[test]
    fn a_vmlinux_with_a_pvh_note_passes_and_its_entry_is_found() {
        let gnu: (&[u8], u32, &[u8]) = (b"GNU\0", 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let pvh: (&[u8], u32, &[u8]) = (b"Xen\0", 18, &0x0100_0abcu32.to_le_bytes());
        assert_eq!(
            check_bytes("ok", &elf(EM_X86_64, &[gnu, pvh], &[0xf4])),
            Ok(())
        );
        let path = std::env::temp_dir().join(format!("vfio-vmm-elf-{}-e", std::process::id()));
        std::fs::write(&path, elf(EM_X86_64, &[gnu, pvh], &[0xf4])).unwrap();
        let entry = find_pvh_entry(&mut File::open(&path).unwrap());
        assert_eq!(entry, Ok(Some(0x0100_0abc)));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn an_elf_that_is_not_a_pvh_vmlinux_is_refused_with_the_reason() {
        let xen_other: (&[u8], u32, &[u8]) = (b"Xen\0", 17, &[0; 4]);
        let linux_18: (&[u8], u32, &[u8]) = (b"Linux\0", 18, &[0; 4]);
        let pvh: (&[u8], u32, &[u8]) = (b"Xen\0", 18, &[0; 4]);
        let mut big_endian = elf(EM_X86_64, &[pvh], &[]);
        big_endian[5] = 2;
        let mut huge_notes = elf(EM_X86_64, &[pvh], &[]);
        huge_notes[EHDR_LEN + 32..EHDR_LEN + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        let cases = [
            (
                "no-note",
                elf(EM_X86_64, &[xen_other, linux_18], &[]),
                "no PVH entry note",
            ),
            ("arm", elf(183, &[pvh], &[]), "another machine than x86-64"),
            ("be", big_endian, "not a little-endian 64-bit ELF"),
            ("short", ELF_MAGIC.to_vec(), "too short"),
            ("huge", huge_notes, "larger than 1 MiB"),
        ];
        for (name, bytes, want) in cases {
            let err = check_bytes(name, &bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
            assert!(err.contains("CONFIG_PVH=y"), "{name}: {err}");
        }
    }

    #[test]
    fn truncated_or_overflowing_notes_end_the_search() {
        assert_eq!(pvh_note(&[]), None);
        let mut note = Vec::new();
        for n in [4u32, u32::MAX, 18] {
            note.extend_from_slice(&n.to_le_bytes());
        }
        note.extend_from_slice(b"Xen\0");
        assert_eq!(pvh_note(&note), None, "descriptor past the end");
        note[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(pvh_note(&note), None, "name size overflowing");
    }
}
