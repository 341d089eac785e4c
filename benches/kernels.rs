//! Per-core rates of the hot kernels, single-threaded:
//! - the hashing kernel alone (normalized value in, lowercase hex out): `sha2` one value at a
//!   time vs. the interleaved SHA-NI lanes of `identity::sha256x`;
//! - the whole identity transform of a batch (meta profile, the B1 columns);
//! - phone + country alone: the uniform `(212) 555-NNNN` column of the B1 batch, and a mixed
//!   one with the shapes, countries and shares `shared/bench/gen_data.py` writes;
//! - dropping duplicates: the B1 audience's 5.2 million member keys through `Members::admit`
//!   in batches of 8,192, against one hash set of them all.
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

/// xorshift64*: deterministic data without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Phone and country columns as `gen_data.py` (`make_customers`) writes them: national and
/// international formats, the country's share of rows, 20% null phones, stray white space.
fn bench_phones(rows: usize) -> (Vec<Option<String>>, Vec<String>) {
    // (country, calling code, share in percent)
    const COUNTRIES: [(&str, &str, u64); 10] = [
        ("US", "1", 55),
        ("GB", "44", 10),
        ("DE", "49", 8),
        ("FR", "33", 6),
        ("CA", "1", 6),
        ("BR", "55", 4),
        ("JP", "81", 3),
        ("IN", "91", 3),
        ("AU", "61", 3),
        ("ES", "34", 2),
    ];
    let mut rng = Rng(42);
    let mut phones = Vec::with_capacity(rows);
    let mut countries = Vec::with_capacity(rows);
    for _ in 0..rows {
        let mut share = rng.below(100);
        let &(country, dial, _) = COUNTRIES
            .iter()
            .find(|c| {
                let hit = share < c.2;
                share = share.saturating_sub(c.2);
                hit
            })
            .expect("shares add up to 100");
        let mut d = (2_000_000_000 + rng.below(7_999_999_999)).to_string();
        if matches!(country, "FR" | "AU" | "ES") {
            d.truncate(9);
        }
        if d.starts_with(dial) || d.starts_with('9') {
            d.replace_range(..1, "7");
        }
        let mut fmt = rng.below(7);
        if fmt == 4 && !matches!(country, "US" | "CA") {
            fmt = 6;
        }
        if fmt == 5 && !matches!(country, "GB" | "DE" | "FR" | "ES" | "IN") {
            fmt = 3;
        }
        let (d3, d6, d10) = (&d[..3], &d[3..6], &d[6..]);
        let mut phone = match fmt {
            0 => format!("({d3}) {d6}-{d10}"),
            1 => format!("{d3}-{d6}-{d10}"),
            2 => format!("{d3}.{d6}.{d10}"),
            3 => format!("+{dial} {d3} {d6} {d10}"),
            4 => format!("{dial}{d}"),
            5 => format!("00{dial}{d}"),
            _ => format!("+{dial}-{d}"),
        };
        if rng.below(100) < 3 {
            phone = format!(" \u{a0}{phone} ");
        }
        phones.push((rng.below(100) >= 20).then_some(phone));
        let mut country = country.to_string();
        if rng.below(100) < 10 {
            country.make_ascii_lowercase();
        }
        if rng.below(100) < 2 {
            country = format!(" {country} ");
        }
        countries.push(country);
    }
    (phones, countries)
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
            hash::hash_many_into(&slots, Encoding::Hex, out, None);
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
    let plan = IdentityPlan::new(
        Profile::Meta,
        vec![
            InputColumn::new(Kind::Email, "email"),
            InputColumn::new(Kind::Phone, "phone"),
            InputColumn::new(Kind::FirstName, "first_name"),
            InputColumn::new(Kind::LastName, "last_name"),
            InputColumn::new(Kind::Zip, "zip"),
            InputColumn::new(Kind::Country, "country"),
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
        vec![
            InputColumn::new(Kind::Phone, "phone"),
            InputColumn::new(Kind::Country, "country"),
        ],
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
    let (phones, countries) = bench_phones(rows);
    let mixed = RecordBatch::try_from_iter([
        ("phone", Arc::new(StringArray::from(phones)) as ArrayRef),
        (
            "country",
            Arc::new(StringArray::from(countries)) as ArrayRef,
        ),
    ])
    .unwrap();
    let tally = identity::transform(&phone_plan, &mixed).unwrap().tally;
    // Every generated phone is valid (as in gen_data.py): the mix measures normalizing, not
    // rejecting.
    assert!(tally.invalid.is_empty(), "{:?}", tally.invalid);
    rate(
        "identity transform, phone mix of gen_data (rows)",
        rows,
        || {
            identity::transform(&phone_plan, &mixed).unwrap();
        },
    );

    // Duplicates: member keys are uniform 128-bit hashes.
    let members = 5_200_000;
    let mut rng = Rng(0x5eed);
    let keys: Vec<u128> = (0..members)
        .map(|_| (u128::from(rng.next()) << 64) | u128::from(rng.next()))
        .collect();
    let batches: Vec<(RecordBatch, Vec<u128>)> = keys
        .chunks(8192)
        .map(|k| {
            let rows = arrow::array::UInt32Array::from_iter_values(0..k.len() as u32);
            let batch = RecordBatch::try_from_iter([("row", Arc::new(rows) as ArrayRef)]);
            (batch.unwrap(), k.to_vec())
        })
        .collect();
    rate("one hash set of member keys (members)", members, || {
        let mut seen: std::collections::HashSet<u128, foldhash::fast::RandomState> =
            Default::default();
        for k in &keys {
            seen.insert(*k);
        }
        assert_eq!(seen.len(), members);
    });
    rate(
        "Members::admit, batches of 8,192 (members)",
        members,
        || {
            let mut seen = activator::members::Members::new();
            for (batch, keys) in &batches {
                let batch = identity::MemberBatch {
                    batch: batch.clone(),
                    keys: keys.clone(),
                    tally: Default::default(),
                    digests: None,
                };
                seen.admit(batch).unwrap();
            }
            assert_eq!(seen.unique(), members as u64);
        },
    );
}
