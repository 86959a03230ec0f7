//! What both benchmark reports (network: [`super::report`], storage:
//! [`super::storage`]) share: grouping the records by configuration, a
//! configuration's [`Status`] from its records, and `--strict`'s checks that
//! a required one ran (its own numbers' checks stay with each report).

use std::collections::BTreeMap;

use serde::Serialize;

use super::Record;

/// Whether a configuration produced numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// At least one repetition was measured and nothing failed.
    Ok,
    /// It could not run here (reason given).
    Skipped,
    /// It failed (reason given).
    Failed,
}

impl Status {
    /// "ok", "skipped" or "FAILED", as the tables and `--strict` say it.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skipped => "skipped",
            Status::Failed => "FAILED",
        }
    }

    /// A configuration's outcome and its reason from its records: failed if
    /// one is a fail record, else ok if it `measured` a repetition, else
    /// skipped (with the skip record's reason, if any).
    pub(crate) fn of(records: &[&Record], measured: bool) -> (Status, Option<String>) {
        let reason_of = |want_fail: bool| {
            records.iter().find_map(|r| match r {
                Record::Fail { reason, .. } if want_fail => Some(reason.clone()),
                Record::Skip { reason, .. } if !want_fail => Some(reason.clone()),
                _ => None,
            })
        };
        match reason_of(true) {
            Some(r) => (Status::Failed, Some(r)),
            None if measured => (Status::Ok, None),
            None => (Status::Skipped, reason_of(false)),
        }
    }
}

/// A configuration's result as [`check_required`] reads it.
pub(crate) trait Outcome {
    /// Its name, status, reason (skipped or failed) and repetitions measured.
    fn outcome(&self) -> (&str, Status, Option<&str>, usize);
}

/// `--strict`'s checks common to both reports, per `require`d name: a problem
/// in `out` if no configuration has it, if it is not ok (with its reason), or
/// if it has fewer than `min_reps` repetitions. Returns the required ones that
/// are ok, for their own numbers' checks.
pub(crate) fn check_required<'c, C: Outcome>(
    configs: &'c [C],
    require: &'c [String],
    min_reps: usize,
    out: &mut Vec<String>,
) -> Vec<(&'c str, &'c C)> {
    let mut ok = Vec::new();
    for want in require {
        let Some(c) = configs.iter().find(|c| c.outcome().0 == want) else {
            out.push(format!("{want}: no result"));
            continue;
        };
        let (_, status, reason, runs) = c.outcome();
        if status != Status::Ok {
            let why = reason.unwrap_or("no reason given");
            out.push(format!("{want}: {}: {why}", status.word()));
            continue;
        }
        if runs < min_reps {
            out.push(format!("{want}: {runs} of {min_reps} repetitions"));
        }
        ok.push((want.as_str(), c));
    }
    ok
}

/// Configuration names, each with its records.
pub(crate) type Groups<'a> = Vec<(&'a str, Vec<&'a Record>)>;

/// What both reports start from: the setup records' keys (but `record`),
/// and the records `mine` accepts grouped by configuration, the names in
/// `order` first (in its order), then the others by name.
pub(crate) fn group_records<'a>(
    records: &'a [Record],
    order: &[&str],
    mine: impl Fn(&Record) -> bool,
) -> (BTreeMap<String, String>, Groups<'a>) {
    let mut setup = BTreeMap::new();
    let mut by_config: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in records {
        match r {
            Record::Setup(kv) => setup.extend(
                kv.iter()
                    .filter(|(k, _)| *k != "record")
                    .map(|(k, v)| (k.clone(), v.clone())),
            ),
            _ if mine(r) => by_config
                .entry(r.config().unwrap_or_default())
                .or_default()
                .push(r),
            _ => {}
        }
    }
    let rank = |n: &str| order.iter().position(|c| *c == n).unwrap_or(order.len());
    let mut groups: Vec<_> = by_config.into_iter().collect();
    groups.sort_by_key(|(n, _)| (rank(n), *n));
    (setup, groups)
}
