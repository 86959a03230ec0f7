//! Seeded structured random testing, shared by every fuzz target of the
//! workspace: the root crate compiles this same file (`#[path]` in
//! `src/lib.rs`), so both crates' targets draw their cases the same way.
//!
//! No coverage-guided fuzzer runs on this machine's stable toolchain, so each
//! target is a test that feeds `arbitrary::Unstructured` bytes from a seeded
//! xorshift generator: the same seed gives the same cases, so a failure
//! reproduces by running the test again. `cargo test` runs a few thousand
//! cases per target; `scripts/fuzz.sh` sets [`CASES_VAR`] to run a million.

use arbitrary::Unstructured;

/// The environment variable that sets the number of cases of every target.
pub const CASES_VAR: &str = "VFIO_VMM_FUZZ_CASES";

/// Longest byte string one case draws its input from.
const MAX_INPUT: usize = 2048;

/// xorshift64: reproducible, fast, and good enough to shape inputs.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// The number of cases to run: [`CASES_VAR`] if set, else `brief`.
pub fn cases(brief: u64) -> u64 {
    match std::env::var(CASES_VAR) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{CASES_VAR}={v:?} is not a number")),
        Err(_) => brief,
    }
}

/// Says which case of which target was running when a panic unwinds.
struct Witness<'a> {
    target: &'a str,
    case: u64,
}

impl Drop for Witness<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "fuzz target {} failed at case {} (reproduce: {}={} cargo test {})",
                self.target,
                self.case,
                CASES_VAR,
                self.case + 1,
                self.target
            );
        }
    }
}

/// Runs `cases(brief)` cases of `target`: each gets a fresh [`Unstructured`]
/// of random length and content. `one` returns `Err` only when the input ran
/// out, which ends that case normally. Prints and returns the case count.
pub fn run<F>(target: &str, brief: u64, mut one: F) -> u64
where
    F: FnMut(&mut Unstructured) -> arbitrary::Result<()>,
{
    let n = cases(brief);
    let seed = target.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = Rng(seed | 1);
    let mut buf = vec![0u8; MAX_INPUT];
    let started = std::time::Instant::now();
    for case in 0..n {
        let len = (rng.next_u64() % MAX_INPUT as u64) as usize;
        rng.fill(&mut buf[..len]);
        let witness = Witness { target, case };
        // Running out of input is a normal end of a case.
        let _ = one(&mut Unstructured::new(&buf[..len]));
        drop(witness);
    }
    eprintln!("fuzz {target}: {n} cases in {:.1?}", started.elapsed());
    n
}
