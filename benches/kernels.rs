//! Per-core rates of the hot kernels, single-threaded:
//! - the hashing kernel alone (normalized value in, lowercase hex out): `sha2` one value at a
//!   time vs. the interleaved SHA-NI lanes of `identity::sha256x`;
//! - the whole identity transform of a batch (meta profile, the B1 columns).
//!
//! Run: `cargo bench --profile bench-release --bench kernels`.

use activator::identity::{self, Encoding, IdentityPlan, InputColumn, Kind, Profile, hash};
use arrow::array::{ArrayRef, RecordBatch, StringArray};
use std::sync::Arc;
use std::time::Instant;

fn emails(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("firstname.lastname{}.{}@gmail.com", i % 10_000, i))
        .collect()
}

fn rate(label: &str, n: usize, f: impl Fn()) {
    f(); // warm up
    let runs = 5;
    let mut best = f64::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{label:<48} {:>8.2} M/s per core", n as f64 / best / 1e6);
}

fn main() {
    let n = 1_000_000;
    let values = emails(n);
    let mut out = vec![0u8; n * 64];
    let out_ptr = &mut out as *mut Vec<u8>;

    rate("sha2, one value at a time, faster-hex", n, || {
        // SAFETY: single-threaded benchmark; `out` outlives the closure.
        let out = unsafe { &mut *out_ptr };
        for (i, v) in values.iter().enumerate() {
            hash::hash_into(v.as_bytes(), Encoding::Hex, &mut out[i * 64..(i + 1) * 64]);
        }
    });
    let slots: Vec<(usize, &[u8])> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i * 64, v.as_bytes()))
        .collect();
    rate(
        &format!(
            "interleaved SHA-NI x{} (available: {})",
            identity::sha256x::LANES,
            identity::sha256x::available()
        ),
        n,
        || {
            let out = unsafe { &mut *out_ptr };
            hash::hash_many_into(&slots, Encoding::Hex, out);
        },
    );

    // The identity transform over one B1-shaped batch.
    let rows = 100_000;
    let col = |f: &dyn Fn(usize) -> String| -> ArrayRef {
        Arc::new(StringArray::from((0..rows).map(f).collect::<Vec<_>>()))
    };
    let batch = RecordBatch::try_from_iter([
        ("email", col(&|i| format!(" First.Last{i}@Example.com "))),
        ("phone", col(&|i| format!("(212) 555-{:04}", i % 10_000))),
        ("first_name", col(&|_| "José".to_string())),
        ("last_name", col(&|_| "O'Brien".to_string())),
        ("zip", col(&|i| format!("{}", 1000 + i % 90_000))),
        (
            "country",
            col(&|i| if i % 3 == 0 { "us " } else { "US" }.to_string()),
        ),
    ])
    .unwrap();
    let input = |kind, c: &str| InputColumn {
        kind,
        column: c.into(),
        hashed: false,
    };
    let plan = IdentityPlan::new(
        Profile::Meta,
        vec![
            input(Kind::Email, "email"),
            input(Kind::Phone, "phone"),
            input(Kind::FirstName, "first_name"),
            input(Kind::LastName, "last_name"),
            input(Kind::Zip, "zip"),
            input(Kind::Country, "country"),
        ],
        None,
        vec![],
    );
    rate("identity transform, B1 columns (rows)", rows, || {
        identity::transform(&plan, &batch).unwrap();
    });
    let phones = batch.project(&[1, 5]).unwrap();
    let phone_plan = IdentityPlan::new(
        Profile::Meta,
        vec![input(Kind::Phone, "phone"), input(Kind::Country, "country")],
        None,
        vec![],
    );
    rate(
        "identity transform, phone + country only (rows)",
        rows,
        || {
            identity::transform(&phone_plan, &phones).unwrap();
        },
    );
}
