//! Unprivileged use: `host check --user` over fake hosts (access to the VFIO and KVM
//! nodes worked out for another user, its memlock limit read from a process, its taps),
//! and `host bind --owner` handing a group node to a user (chown on a file standing in
//! for /dev/vfio/N).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::tree::put;
use common::{bdfs, FakeHost};
use iommu::setup::check::{check, CheckOptions};
use iommu::setup::finding::{Level, Report};
use iommu::setup::owner::{give, give_nodes, Account, OwnerError};
use iommu::setup::user_check::UserOptions;

/// A user that exists only in these tests.
fn stranger() -> Account {
    Account {
        name: "guest1".to_string(),
        uid: 4242,
        gid: 4242,
        groups: vec![4242],
    }
}

/// The account of the user running the tests.
fn me() -> Account {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    Account {
        name: "me".to_string(),
        uid,
        gid,
        groups: vec![gid],
    }
}

fn node(root: &Path, rel: &str, mode: u32) {
    let path = root.join(rel);
    put(&path, "");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// intel-healthy (0000:03:00.0 on vfio-pci in group 5) with its VFIO and KVM nodes.
fn host_with_nodes() -> FakeHost {
    let fake = FakeHost::load("intel-healthy");
    node(fake.root(), "dev/vfio/vfio", 0o666);
    node(fake.root(), "dev/vfio/5", 0o600);
    node(fake.root(), "dev/kvm", 0o660);
    fake
}

fn check_as(fake: &FakeHost, user: UserOptions, memory: Option<u64>, devices: &[&str]) -> Report {
    let options = CheckOptions {
        memory,
        devices: bdfs(devices),
        user: Some(user),
        ..CheckOptions::default()
    };
    check(&fake.host(), &options)
}

fn user(account: Account) -> UserOptions {
    UserOptions {
        account,
        pid: None,
        taps: Vec::new(),
    }
}

fn line(report: &Report, subject: &str) -> String {
    let found: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.subject == subject)
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 1, "one line about {subject}:\n{report}");
    found[0].clone()
}

#[test]
fn another_user_lacking_the_group_node_and_kvm_is_told_how_to_get_them() {
    let fake = host_with_nodes();
    let report = check_as(&fake, user(stranger()), Some(256 << 20), &["03:00.0"]);
    assert!(!report.ready(), "{report}");
    assert!(
        line(&report, "/dev/vfio/vfio").starts_with("ok"),
        "{report}"
    );
    let group = line(&report, "/dev/vfio/5");
    assert!(group.starts_with("fail"), "{group}");
    assert!(
        group.contains("vfio-vmm host bind --owner guest1 0000:03:00.0"),
        "{group}"
    );
    let kvm = line(&report, "/dev/kvm");
    assert!(
        kvm.starts_with("fail") && kvm.contains("usermod -aG"),
        "{kvm}"
    );
    // Another user's limit cannot be read from here: say so, with the amount to set.
    let memlock = line(&report, "memlock");
    assert!(memlock.starts_with("warn"), "{memlock}");
    assert!(memlock.contains("not knowable"), "{memlock}");
    assert!(memlock.contains("262144"), "{memlock}");
    let tap = line(&report, "tap");
    assert!(
        tap.contains("ip tuntap add dev NAME mode tap user guest1"),
        "{tap}"
    );
    // The host-wide checks are still there.
    assert!(line(&report, "iommu").starts_with("ok"), "{report}");
}

#[test]
fn a_node_given_to_the_user_and_kvm_shared_by_group_pass() {
    let fake = host_with_nodes();
    let mut account = stranger();
    let file = |rel: &str| fs::metadata(fake.root().join(rel)).unwrap();
    // The user owns nothing here (not root), so mirror the nodes' owner and group into
    // the account instead: owner of /dev/vfio/5 and member of /dev/kvm's group.
    account.uid = file("dev/vfio/5").uid();
    account.groups = vec![file("dev/kvm").gid()];
    fake.set_euid(account.uid.wrapping_add(1));
    let report = check_as(&fake, user(account), None, &["03:00.0"]);
    assert!(line(&report, "/dev/vfio/5").starts_with("ok"), "{report}");
    assert!(line(&report, "/dev/kvm").starts_with("ok"), "{report}");
}

#[test]
fn permission_rule_uses_owner_then_group_then_other_bits() {
    use iommu::setup::user_check::may_read_write;
    let user = stranger();
    assert!(may_read_write(4242, 0, 0o600, &user));
    assert!(
        !may_read_write(4242, 4242, 0o066, &user),
        "owner bits decide for the owner"
    );
    assert!(may_read_write(0, 4242, 0o660, &user));
    assert!(
        !may_read_write(0, 4242, 0o606, &user),
        "group bits decide for a member"
    );
    assert!(may_read_write(0, 0, 0o666, &user));
    assert!(!may_read_write(0, 0, 0o664, &user));
    assert!(!may_read_write(0, 0, 0o600, &user));
    let root = Account {
        uid: 0,
        ..stranger()
    };
    assert!(may_read_write(1, 1, 0o000, &root));
}

fn process(fake: &FakeHost, pid: u32, uid: u32, memlock: &str) {
    let dir = fake.root().join(format!("proc/{pid}"));
    put(
        &dir.join("status"),
        &format!("Name:\tsh\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
    );
    put(
        &dir.join("limits"),
        &format!("Limit                     Soft Limit           Hard Limit           Units     \nMax locked memory         {memlock}              {memlock}              bytes     \n"),
    );
}

#[test]
fn memlock_of_a_named_process_is_checked_against_the_guest() {
    let fake = host_with_nodes();
    process(&fake, 700, 4242, "8388608");
    process(&fake, 701, 4242, "unlimited");
    process(&fake, 702, 1, "unlimited");
    let with_pid = |pid| UserOptions {
        pid: Some(pid),
        ..user(stranger())
    };
    let low = line(
        &check_as(&fake, with_pid(700), Some(256 << 20), &[]),
        "memlock",
    );
    assert!(low.starts_with("fail") && low.contains("8 MiB"), "{low}");
    assert!(low.contains("prlimit --memlock=262144K --pid 700"), "{low}");
    let ok = line(
        &check_as(&fake, with_pid(701), Some(256 << 20), &[]),
        "memlock",
    );
    assert!(ok.starts_with("ok") && ok.contains("unlimited"), "{ok}");
    let wrong = line(
        &check_as(&fake, with_pid(702), Some(256 << 20), &[]),
        "memlock",
    );
    assert!(
        wrong.starts_with("fail") && wrong.contains("does not run as guest1"),
        "{wrong}"
    );
    let gone = line(&check_as(&fake, with_pid(703), None, &[]), "memlock");
    assert!(gone.starts_with("fail"), "{gone}");
}

#[test]
fn memlock_when_checking_yourself_is_this_process_limit() {
    let fake = host_with_nodes();
    let account = stranger();
    fake.set_euid(account.uid);
    fake.set_memlock(Some(8 << 20));
    let report = check_as(&fake, user(account), Some(256 << 20), &[]);
    let memlock = line(&report, "memlock");
    assert!(
        memlock.starts_with("fail") && memlock.contains("RLIMIT_MEMLOCK is 8 MiB"),
        "{memlock}"
    );
}

fn tap(fake: &FakeHost, name: &str, tun_flags: &str, owner: &str, group: &str, flags: &str) {
    let dir = fake.root().join("sys/class/net").join(name);
    put(&dir.join("tun_flags"), &format!("{tun_flags}\n"));
    put(&dir.join("owner"), &format!("{owner}\n"));
    put(&dir.join("group"), &format!("{group}\n"));
    put(&dir.join("flags"), &format!("{flags}\n"));
}

#[test]
fn taps_must_exist_belong_to_the_user_be_up_and_single_queue() {
    let fake = host_with_nodes();
    tap(&fake, "mine", "0x1002", "4242", "-1", "0x1003");
    tap(&fake, "bygroup", "0x1002", "-1", "4242", "0x1003");
    tap(&fake, "nobody", "0x1002", "-1", "-1", "0x1003");
    tap(&fake, "down", "0x1002", "4242", "-1", "0x1002");
    tap(&fake, "mq", "0x1102", "4242", "-1", "0x1003");
    put(&fake.root().join("sys/class/net/eth0/flags"), "0x1003\n");
    let names = ["mine", "bygroup", "nobody", "down", "mq", "eth0", "missing"];
    let options = UserOptions {
        taps: names.iter().map(ToString::to_string).collect(),
        ..user(stranger())
    };
    let report = check_as(&fake, options, None, &[]);
    let level = |name: &str| {
        report
            .findings
            .iter()
            .find(|f| f.subject == format!("tap {name}"))
            .unwrap()
            .level
    };
    assert_eq!(level("mine"), Level::Ok, "{report}");
    assert_eq!(level("bygroup"), Level::Ok, "{report}");
    assert_eq!(level("nobody"), Level::Fail, "{report}");
    assert_eq!(level("down"), Level::Warn, "{report}");
    assert_eq!(level("mq"), Level::Fail, "{report}");
    assert_eq!(level("eth0"), Level::Fail, "{report}");
    let missing = line(&report, "tap missing");
    assert!(
        missing.contains("ip tuntap add dev missing mode tap user guest1"),
        "{missing}"
    );
}

#[test]
fn bind_owner_gives_the_group_node_to_the_user_mode_0600() {
    let fake = host_with_nodes();
    let path = fake.root().join("dev/vfio/5");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    // chown to yourself needs no privilege, so this runs as any user.
    let nodes = give_nodes(&fake.host(), &bdfs(&["03:00.0", "03:00.0"]), &me()).unwrap();
    assert_eq!(nodes, vec![path.clone()], "each node once");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.uid(), me().uid);
    assert_eq!(meta.mode() & 0o7777, 0o600);
}

#[test]
fn bind_owner_refuses_without_root_and_for_a_device_without_group() {
    let fake = host_with_nodes();
    fake.set_euid(1000);
    let err = give_nodes(&fake.host(), &bdfs(&["03:00.0"]), &me()).unwrap_err();
    assert!(matches!(err, OwnerError::NotRoot(1000)), "{err}");
    assert!(err.to_string().contains("must run as root"), "{err}");
    fake.set_euid(0);
    let err = give_nodes(&fake.host(), &bdfs(&["09:00.0"]), &me()).unwrap_err();
    assert!(err.to_string().contains("0000:09:00.0"), "{err}");
}

#[test]
fn users_resolve_by_name_or_uid_and_unknown_ones_say_so() {
    let root = Account::resolve("root").unwrap();
    assert_eq!((root.uid, root.gid), (0, 0));
    assert!(root.groups.contains(&0));
    assert_eq!(Account::resolve("0").unwrap().name, "root");
    let err = Account::resolve("no-such-user-vfio").unwrap_err();
    assert!(matches!(err, OwnerError::UnknownUser(_)), "{err}");
    assert!(err.to_string().contains("getent passwd"), "{err}");
    let err = Account::resolve("4000000000").unwrap_err();
    assert!(matches!(err, OwnerError::UnknownUser(_)), "{err}");
}

#[test]
#[ignore = "needs root: chown to another user"]
fn bind_owner_chowns_to_another_user() {
    let fake = host_with_nodes();
    let path = fake.root().join("dev/vfio/5");
    give(&path, &stranger()).unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (4242, 0o600));
}
