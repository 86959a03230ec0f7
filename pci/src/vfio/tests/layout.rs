//! Config space split and BAR mmap areas, as pure functions.

// Lists of one trapped range are the point of some tests.
#![allow(clippy::single_range_in_vec_init)]

use super::nic_config;
use crate::vfio::{
    extended_capabilities, mmap_areas, standard_capabilities, Area, ConfigLayout, RegionInfo,
};

fn region(size: u64) -> RegionInfo {
    RegionInfo {
        size,
        readable: true,
        writable: true,
        mmappable: true,
        ..Default::default()
    }
}

#[test]
fn capability_lists_are_walked_in_chain_order() {
    let c = nic_config();
    assert_eq!(
        standard_capabilities(&c),
        vec![(0x40, 0x01), (0x50, 0x05), (0x70, 0x11), (0xa0, 0x10)]
    );
    assert_eq!(
        extended_capabilities(&c),
        vec![(0x100, 0x0001), (0x140, 0x0010), (0x180, 0x0003)]
    );
    assert!(extended_capabilities(&c[..256]).is_empty());
}

#[test]
fn corrupt_capability_lists_end_instead_of_looping() {
    let mut c = nic_config();
    c[0x51] = 0x40; // MSI points back to PM
    assert_eq!(standard_capabilities(&c).len(), 2);
    c[0x143] = 0x10; // SR-IOV's next is 0x100: a loop
    c[0x142] = 0x01;
    assert_eq!(extended_capabilities(&c).len(), 2);
    c[0x06] = 0; // no capability list bit
    assert!(standard_capabilities(&c).is_empty());
}

#[test]
fn sr_iov_is_unlinked_and_its_writes_dropped() {
    let c = nic_config();
    let layout = ConfigLayout::new(&c, |_| false);
    let mut header = c[0x100..0x104].to_vec();
    layout.patch_extended(0x100, &mut header);
    let header = u32::from_le_bytes(header.try_into().unwrap());
    assert_eq!(header >> 20, 0x180, "AER now points past SR-IOV");
    assert_eq!(header & 0xffff, 0x0001);
    assert!(layout.is_hidden(0x140) && layout.is_hidden(0x17f));
    assert!(!layout.is_hidden(0x180) && !layout.is_hidden(0x100));
    assert_eq!(layout.hidden_names(), ["SR-IOV".to_string()]);
}

#[test]
fn a_hidden_first_extended_capability_becomes_a_null_one() {
    let mut c = nic_config();
    c[0x100..0x104].copy_from_slice(&(0x000eu32 | (1 << 16) | (0x180 << 20)).to_le_bytes()); // ARI
    let layout = ConfigLayout::new(&c, |_| false);
    let mut header = [0u8; 4];
    layout.patch_extended(0x100, &mut header);
    assert_eq!(u32::from_le_bytes(header), 0x180 << 20);
    // A read straddling the patched dword only changes its bytes.
    let mut bytes = [0xaa; 6];
    layout.patch_extended(0xfe, &mut bytes);
    assert_eq!(bytes, [0xaa, 0xaa, 0, 0, 0, 0x18]);
}

#[test]
fn hidden_standard_capabilities_are_skipped_by_the_links() {
    let c = nic_config();
    let layout = ConfigLayout::new(&c, |id| id == 0x05);
    assert!(
        layout.links().contains(&(0x41, 0x70)),
        "{:?}",
        layout.links()
    );
    assert!(layout.is_shadow(0x41) && layout.is_shadow(0x34));
    assert!(layout.is_hidden(0x50) && layout.is_hidden(0x6f) && !layout.is_hidden(0x70));
    assert_eq!(layout.next_of(0x70), 0xa0);
    assert_eq!(layout.visible_standard().len(), 3);
}

#[test]
fn bars_and_interrupt_line_are_shadowed_identity_is_not() {
    let layout = ConfigLayout::new(&nic_config(), |_| false);
    for o in [0x10, 0x27, 0x30, 0x33, 0x3c, 0x3d] {
        assert!(layout.is_shadow(o), "{o:#x}");
    }
    for o in [0x00, 0x02, 0x06, 0x08, 0x2c, 0x42] {
        assert!(!layout.is_shadow(o), "{o:#x}");
    }
}

#[test]
fn a_whole_bar_maps_as_one_area() {
    assert_eq!(
        mmap_areas(&region(0x20000), 0x20000, &[]),
        vec![Area {
            offset: 0,
            size: 0x20000
        }]
    );
}

#[test]
fn msix_pages_are_cut_out() {
    let areas = mmap_areas(&region(0x10000), 0x10000, &[0x2000..0x2050, 0x3008..0x3010]);
    assert_eq!(
        areas,
        vec![
            Area {
                offset: 0,
                size: 0x2000
            },
            Area {
                offset: 0x4000,
                size: 0xc000
            }
        ]
    );
    // A table that is not page aligned takes its whole page with it.
    let areas = mmap_areas(&region(0x4000), 0x4000, &[0x1800..0x2100]);
    assert_eq!(
        areas,
        vec![
            Area {
                offset: 0,
                size: 0x1000
            },
            Area {
                offset: 0x3000,
                size: 0x1000
            }
        ]
    );
}

#[test]
fn sparse_areas_are_honoured_and_trimmed_to_pages() {
    let mut r = region(0x10000);
    r.sparse_areas = Some(vec![
        Area {
            offset: 0x3000,
            size: 0xd000,
        },
        Area {
            offset: 0x0,
            size: 0x1800,
        },
    ]);
    let areas = mmap_areas(&r, 0x10000, &[0x3000..0x3010]);
    assert_eq!(
        areas,
        vec![
            Area {
                offset: 0,
                size: 0x1000
            },
            Area {
                offset: 0x4000,
                size: 0xc000
            }
        ]
    );
}

#[test]
fn small_or_unmappable_bars_trap_entirely() {
    assert!(mmap_areas(&region(0x100), 0x100, &[]).is_empty());
    let mut r = region(0x4000);
    r.mmappable = false;
    assert!(mmap_areas(&r, 0x4000, &[]).is_empty());
    let mut r = region(0x1000);
    r.sparse_areas = Some(vec![]);
    assert!(mmap_areas(&r, 0x1000, &[]).is_empty());
}
