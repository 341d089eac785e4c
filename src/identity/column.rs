//! Whole Arrow batches in, member batches out: clean, normalize, hash, and keep the members.
//!
//! Per input column, the normalized values of a batch are packed into one buffer; hashes are
//! written straight into the output column's buffer. Rows without a valid strong identifier are
//! counted and dropped here; duplicates are dropped later (`members.rs`), across batches, by the
//! 128-bit member key computed here.

use super::geo::Region;
use super::hash;
use super::profile::{Encoding, Kind, OutputField, Profile, Treatment, output_fields};
use super::rules::{Outcome, RowContext, Scratch, normalize};
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, FixedSizeBinaryArray, RecordBatch, StringArray,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// One identifier column of the segment's result.
#[derive(Clone, Debug)]
pub struct InputColumn {
    pub kind: Kind,
    /// Column name in the segment's result.
    pub column: String,
    /// The job says the column holds SHA-256 hashes already.
    pub hashed: bool,
}

impl InputColumn {
    /// A column of raw values (not hashed already).
    pub fn new(kind: Kind, column: &str) -> InputColumn {
        InputColumn {
            kind,
            column: column.into(),
            hashed: false,
        }
    }
}

/// What to do with a segment's result, worked out once per run.
#[derive(Clone, Debug)]
pub struct IdentityPlan {
    pub profile: Profile,
    pub inputs: Vec<InputColumn>,
    /// Region for rows without a country column or with an unknown country.
    pub default_region: Option<Region>,
    /// Non-identifier columns passed through unchanged (consent flags).
    pub passthrough: Vec<String>,
    fields: Vec<(usize, OutputField)>,
    schema: SchemaRef,
    /// Whether member batches carry their digests as bytes too (`MemberBatch::digests`).
    keep_digests: bool,
}

impl IdentityPlan {
    pub fn new(
        profile: Profile,
        inputs: Vec<InputColumn>,
        default_region: Option<Region>,
        passthrough: Vec<(String, DataType)>,
    ) -> IdentityPlan {
        let mut fields = vec![];
        for (i, input) in inputs.iter().enumerate() {
            for f in output_fields(profile, input.kind) {
                fields.push((i, f));
            }
        }
        let mut schema_fields: Vec<Field> = fields
            .iter()
            .map(|(_, f)| Field::new(&f.name, DataType::Utf8, true))
            .collect();
        for (name, dt) in &passthrough {
            schema_fields.push(Field::new(name, dt.clone(), true));
        }
        IdentityPlan {
            profile,
            inputs,
            default_region,
            passthrough: passthrough.into_iter().map(|(n, _)| n).collect(),
            fields,
            schema: Arc::new(Schema::new(schema_fields)),
            keep_digests: false,
        }
    }

    /// The plan with member batches that carry their digests as 32 bytes each, for a run that
    /// keeps its members in files (`state::digests` stores hashes so). The bytes are at hand
    /// when the text is written; decoding the text again took about 0.46 s of CPU in a Meta
    /// upload of B1's 5.2 million members.
    pub fn keeping_digests(self) -> IdentityPlan {
        IdentityPlan {
            keep_digests: true,
            ..self
        }
    }

    /// Schema of the member batches: `<kind>_sha256` / `<kind>` columns, then passthrough ones.
    pub fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn output_fields(&self) -> impl Iterator<Item = &OutputField> {
        self.fields.iter().map(|(_, f)| f)
    }

    /// The columns of the segment's result the transform reads: the identifier columns, then
    /// the passthrough ones.
    pub fn read_columns(&self) -> impl Iterator<Item = &str> {
        let inputs = self.inputs.iter().map(|i| i.column.as_str());
        inputs.chain(self.passthrough.iter().map(String::as_str))
    }

    /// The output columns that hold hashes (in `profile.encoding()`).
    pub fn hashed_columns(&self) -> Vec<String> {
        self.output_fields()
            .filter(|f| f.treatment == Treatment::Hashed)
            .map(|f| f.name.clone())
            .collect()
    }
}

/// Counts for one batch or a whole run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    pub rows: u64,
    pub members: u64,
    /// Rows with no valid strong identifier (email, phone, mobile_ad_id, external_id).
    pub without_strong_identifier: u64,
    /// Values already hashed, passed through.
    pub pre_hashed: u64,
    /// Invalid values by `<kind>:<reason>`.
    pub invalid: BTreeMap<String, u64>,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.rows += other.rows;
        self.members += other.members;
        self.without_strong_identifier += other.without_strong_identifier;
        self.pre_hashed += other.pre_hashed;
        for (k, v) in &other.invalid {
            *self.invalid.entry(k.clone()).or_default() += v;
        }
    }
}

/// The members of one input batch.
pub struct MemberBatch {
    pub batch: RecordBatch,
    /// One 128-bit key per row of `batch`, for deduplication.
    pub keys: Vec<u128>,
    pub tally: Tally,
    /// Where the plan keeps them (`IdentityPlan::keeping_digests`), the digests of its hashed
    /// columns, in their order, as `FixedSizeBinary(32)` with the columns' nulls.
    pub digests: Option<Vec<ArrayRef>>,
}

/// The normalized values of one input column, packed.
struct Normalized {
    data: Vec<u8>,
    /// Each row's value in `data`, as (start, end). A repeated value points at the bytes of its
    /// first row rather than a copy of them: copying the names, zips and countries that repeat
    /// was a small `memcpy` call a row each.
    spans: Vec<(u32, u32)>,
    outcome: Vec<Outcome>,
    /// For each row, an earlier row of the same raw value (so of the same normalized value and
    /// outcome), or `NOT_SEEN`: the output reuses that row's digest without hashing, or
    /// looking up, the value again.
    same_as: Vec<u32>,
}

/// `Normalized::same_as` of a row whose raw value was not seen earlier in the batch (or whose
/// column does not repeat enough to remember).
const NOT_SEEN: u32 = u32::MAX;

impl Normalized {
    fn value(&self, row: usize) -> &[u8] {
        let (start, end) = self.spans[row];
        &self.data[start as usize..end as usize]
    }

    fn present(&self, row: usize) -> bool {
        matches!(self.outcome[row], Outcome::Valid | Outcome::PreHashed)
    }
}

/// Remembers, within one batch, what each distinct value of a column became, so a value that
/// repeats is worked out once. Names, cities, countries and genders repeat: a CRM table of
/// millions holds a few thousand first names. A column whose values are mostly distinct (e-mails,
/// phones) turns it off after a sample, so it costs them almost nothing.
struct Repeats<K> {
    seen: hashbrown::HashMap<K, u32, foldhash::fast::FixedState>,
    lookups: u32,
    on: bool,
}

impl<K: std::hash::Hash + Eq> Repeats<K> {
    /// Lookups before deciding whether the column repeats enough to keep remembering.
    const SAMPLE: u32 = 512;

    fn new() -> Self {
        Repeats {
            seen: hashbrown::HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0x5eed)),
            lookups: 0,
            on: true,
        }
    }

    /// The index stored with an earlier equal key; else remembers `index` for `key` and returns
    /// `None`.
    fn find_or_insert(&mut self, key: K, index: u32) -> Option<u32> {
        if !self.on {
            return None;
        }
        self.lookups += 1;
        // Fewer than one repeat in four values: remembering costs more than it saves.
        if self.lookups == Self::SAMPLE && self.seen.len() as u32 * 4 > Self::SAMPLE * 3 {
            self.on = false;
            self.seen = hashbrown::HashMap::default();
            return None;
        }
        match self.seen.entry(key) {
            hashbrown::hash_map::Entry::Occupied(e) => Some(*e.get()),
            hashbrown::hash_map::Entry::Vacant(e) => {
                e.insert(index);
                None
            }
        }
    }
}

/// Calls `f(row, value)` for each row of a string column of any Arrow string type.
fn for_each_str<'a>(array: &'a dyn Array, mut f: impl FnMut(usize, Option<&'a str>)) {
    match array.data_type() {
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            (0..a.len()).for_each(|i| f(i, a.is_valid(i).then(|| a.value(i))));
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            (0..a.len()).for_each(|i| f(i, a.is_valid(i).then(|| a.value(i))));
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            (0..a.len()).for_each(|i| f(i, a.is_valid(i).then(|| a.value(i))));
        }
        other => unreachable!("column of type {other} reached the string kernel"),
    }
}

/// Whether a column of `data_type` is text as it is (`text_bytes` counts it exactly).
fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

fn as_strings(array: &ArrayRef) -> Result<ArrayRef, arrow::error::ArrowError> {
    match array.data_type() {
        t if is_text(t) => Ok(array.clone()),
        // Dates, timestamps and integer ids: their text form is what the rules read.
        _ => arrow::compute::cast(array, &DataType::Utf8),
    }
}

fn normalize_column(
    plan: &IdentityPlan,
    input: &InputColumn,
    array: &dyn Array,
    regions: &[Option<Region>],
    scratch: &mut Scratch,
    tally: &mut Tally,
) -> Normalized {
    let mut column = ColumnNormalizer::new(plan, input, regions, scratch, array.len());
    if let DataType::Utf8View = array.data_type() {
        // A view holds a value of up to 12 bytes whole, and of a longer one its length and where
        // its bytes lie: equal views are equal values, so repeats are found by the view's 16
        // bytes, and the text read only for values not seen before. (Equal values with views
        // of their own, copies of one text in two places, are then normalized once each.)
        let a = array.as_string_view();
        let mut repeats = Repeats::new();
        for (row, view) in a.views().iter().enumerate() {
            let raw = a.is_valid(row).then_some(*view);
            column.push(row, raw, || a.value(row), &mut repeats);
        }
    } else {
        let mut repeats = Repeats::new();
        for_each_str(array, |row, raw| {
            column.push(row, raw, || raw.unwrap_or_default(), &mut repeats)
        });
    }
    column.finish(tally)
}

/// One input column's values normalized in turn, each value that repeats worked out once.
struct ColumnNormalizer<'p> {
    plan: &'p IdentityPlan,
    input: &'p InputColumn,
    regions: &'p [Option<Region>],
    scratch: &'p mut Scratch,
    /// Only phones, states and zips read the row's region; for other kinds equal text is enough.
    by_region: bool,
    out: Normalized,
    value: String,
    invalid: BTreeMap<&'static str, u64>,
    pre_hashed: u64,
}

impl<'p> ColumnNormalizer<'p> {
    fn new(
        plan: &'p IdentityPlan,
        input: &'p InputColumn,
        regions: &'p [Option<Region>],
        scratch: &'p mut Scratch,
        rows: usize,
    ) -> Self {
        ColumnNormalizer {
            plan,
            input,
            regions,
            scratch,
            by_region: matches!(input.kind, Kind::Phone | Kind::State | Kind::Zip),
            out: Normalized {
                data: Vec::with_capacity(rows * 24),
                spans: Vec::with_capacity(rows),
                outcome: Vec::with_capacity(rows),
                same_as: Vec::with_capacity(rows),
            },
            value: String::new(),
            invalid: BTreeMap::new(),
            pre_hashed: 0,
        }
    }

    /// Normalizes `row`, whose value is known to `repeats` by `key` (none: null) and whose text
    /// `text` gives.
    fn push<'t, K: std::hash::Hash + Eq>(
        &mut self,
        row: usize,
        key: Option<K>,
        text: impl FnOnce() -> &'t str,
        repeats: &mut Repeats<(K, Option<Region>)>,
    ) {
        let out = &mut self.out;
        let mut same_as = NOT_SEEN;
        let start = out.data.len();
        let mut span = None;
        let outcome = match key {
            None => Outcome::Missing,
            Some(key) => {
                let region = self.regions.get(row).copied().flatten();
                let key = (key, if self.by_region { region } else { None });
                match repeats.find_or_insert(key, row as u32) {
                    Some(earlier) => {
                        same_as = earlier;
                        span = Some(out.spans[earlier as usize]);
                        out.outcome[earlier as usize]
                    }
                    None => {
                        let outcome = normalize(
                            self.plan.profile,
                            self.input.kind,
                            text(),
                            self.input.hashed,
                            RowContext { region },
                            self.scratch,
                            &mut self.value,
                        );
                        if matches!(outcome, Outcome::Valid | Outcome::PreHashed) {
                            out.data.extend_from_slice(self.value.as_bytes());
                        }
                        outcome
                    }
                }
            }
        };
        match outcome {
            Outcome::PreHashed => self.pre_hashed += 1,
            Outcome::Invalid(reason) => *self.invalid.entry(reason).or_default() += 1,
            Outcome::Valid | Outcome::Missing => {}
        }
        // Within u32: at most three times MAX_TRANSFORM_BYTES of input (see `transform`).
        let offset = |at: usize| u32::try_from(at).expect("normalized values are below 4 GiB");
        out.spans
            .push(span.unwrap_or_else(|| (offset(start), offset(out.data.len()))));
        out.outcome.push(outcome);
        out.same_as.push(same_as);
    }

    fn finish(self, tally: &mut Tally) -> Normalized {
        tally.pre_hashed += self.pre_hashed;
        for (reason, n) in self.invalid {
            *tally
                .invalid
                .entry(format!("{}:{reason}", self.input.kind))
                .or_default() += n;
        }
        self.out
    }
}

/// Builds one output column over the member rows, and, where `keep_digests` and the column is
/// hashed, its digests as bytes.
fn output_column(
    field: &OutputField,
    values: &Normalized,
    members: &[usize],
    encoding: Encoding,
    keep_digests: bool,
) -> (ArrayRef, Option<ArrayRef>) {
    let width = hash::encoded_len(encoding);
    // A hashed column is zeroed once, whole, for every member's digest, and cut to the present
    // ones at the end: growing it by one zeroed digest per value (a `resize` each) cost about 1%
    // of B1's samples. `end` is where the next value goes.
    let mut data: Vec<u8> = match field.treatment {
        Treatment::Hashed => vec![0; members.len() * width],
        Treatment::Raw => Vec::with_capacity(members.len() * 16),
    };
    let mut end = 0;
    let mut offsets: Vec<i32> = Vec::with_capacity(members.len() + 1);
    offsets.push(0);
    let mut validity = Vec::with_capacity(members.len());
    // Values to hash, with where their digests go; hashed together once the layout is known.
    let mut to_hash: Vec<(usize, &[u8])> = match field.treatment {
        Treatment::Hashed => Vec::with_capacity(members.len()),
        Treatment::Raw => vec![],
    };
    // A value hashed earlier in this column: its digest is copied, (to, from), once written.
    let mut copies: Vec<(usize, usize)> = Vec::new();
    let mut repeats = Repeats::new();
    // Where each member row's hash went, for the rows that repeat its raw value.
    let mut hashed_at: Vec<u32> = match field.treatment {
        Treatment::Hashed => vec![NOT_SEEN; values.same_as.len()],
        Treatment::Raw => vec![],
    };
    // The digests' bytes, packed as their text is (the present values only), then spread to
    // their rows' places.
    let keep = keep_digests && field.treatment == Treatment::Hashed;
    let mut raw: Vec<u8> = match keep {
        true => vec![0; members.len() * 32],
        false => vec![],
    };
    let raw_at = |text_at: usize| text_at / width * 32;
    for &row in members {
        let present = values.present(row);
        if present {
            let v = values.value(row);
            let part = match field.part {
                Some((a, b)) => &v[a..b],
                None => v,
            };
            match field.treatment {
                Treatment::Raw => {
                    data.extend_from_slice(part);
                    end = data.len();
                }
                Treatment::Hashed => {
                    let start = end;
                    end += width;
                    hashed_at[row] = start as u32;
                    let same_as = values.same_as[row];
                    let earlier = match same_as {
                        NOT_SEEN => NOT_SEEN,
                        e => hashed_at[e as usize],
                    };
                    if earlier != NOT_SEEN {
                        copies.push((start, earlier as usize));
                    } else if values.outcome[row] == Outcome::PreHashed && field.part.is_none() {
                        hash::reencode_hex(part, encoding, &mut data[start..end]);
                        if keep {
                            let at = raw_at(start);
                            let hex = hash::decode_lowercase_hex(part, &mut raw[at..at + 32]);
                            debug_assert!(hex, "pre-hashed values are lowercase hex");
                        }
                    } else if let Some(earlier) = repeats.find_or_insert(part, start as u32) {
                        copies.push((start, earlier as usize));
                    } else {
                        to_hash.push((start, part));
                    }
                }
            }
        }
        validity.push(present);
        // Within i32: `transform` takes at most MAX_TRANSFORM_BYTES of input and
        // MAX_TRANSFORM_ROWS rows, which cannot make 2 GiB of one column.
        offsets.push(i32::try_from(end).expect("a column's output is below 2 GiB"));
    }
    data.truncate(end);
    hash::hash_many_into(&to_hash, encoding, &mut data, keep.then_some(&mut raw[..]));
    for (to, from) in copies {
        data.copy_within(from..from + width, to);
        if keep {
            raw.copy_within(raw_at(from)..raw_at(from) + 32, raw_at(to));
        }
    }
    let nulls = NullBuffer::from(validity);
    let digests = keep.then(|| {
        let present = end / width;
        if present < members.len() {
            hash::spread_to_rows(&mut raw, present, &nulls);
        }
        let digests = FixedSizeBinaryArray::try_new(32, Buffer::from_vec(raw), Some(nulls.clone()))
            .expect("32 bytes for each row");
        Arc::new(digests) as ArrayRef
    });
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    // SAFETY: every value is normalized text (valid UTF-8, as it came from a &str) or ASCII
    // hex/Base64, and offsets grow monotonically within `data`.
    let array = unsafe { StringArray::new_unchecked(offsets, Buffer::from_vec(data), Some(nulls)) };
    (Arc::new(array), digests)
}

pub(crate) fn member_key(columns: &[ArrayRef], rows: usize) -> Vec<u128> {
    let a = foldhash::quality::FixedState::with_seed(0x5eed_0001);
    let b = foldhash::quality::FixedState::with_seed(0x5eed_0002);
    let strings: Vec<&StringArray> = columns.iter().map(|c| c.as_string::<i32>()).collect();
    (0..rows)
        .map(|row| {
            let mut ha = a.build_hasher();
            let mut hb = b.build_hasher();
            for s in &strings {
                if s.is_valid(row) {
                    let v = s.value(row).as_bytes();
                    ha.write_usize(v.len());
                    ha.write(v);
                    hb.write_usize(v.len());
                    hb.write(v);
                } else {
                    ha.write_u8(0xff);
                    hb.write_u8(0xff);
                }
            }
            ((ha.finish() as u128) << 64) | hb.finish() as u128
        })
        .collect()
}

/// The most bytes of identifier text one `transform` call takes. Its buffers are indexed with
/// 32-bit offsets (arrow's `StringArray`, the normalized values' ends): a normalized value is at
/// most three times its input (Unicode lowercase mappings), so 256 MiB of input stays far below
/// 2 GiB of output. `transform_pieces` splits larger batches.
pub const MAX_TRANSFORM_BYTES: usize = 256 << 20;

/// The most rows one `transform` call takes: each row's hashes take up to a kilobyte of output.
pub const MAX_TRANSFORM_ROWS: usize = 1 << 20;

/// Turns one batch of the segment's result into its members, in as many pieces as keep each
/// `transform` within `MAX_TRANSFORM_BYTES` and `MAX_TRANSFORM_ROWS` (a segment can return
/// batches of any size, or values of any length).
pub fn transform_pieces(
    plan: &IdentityPlan,
    batch: &RecordBatch,
) -> Result<Vec<MemberBatch>, arrow::error::ArrowError> {
    pieces_within(plan, batch, MAX_TRANSFORM_BYTES, MAX_TRANSFORM_ROWS)
}

fn pieces_within(
    plan: &IdentityPlan,
    batch: &RecordBatch,
    max_bytes: usize,
    max_rows: usize,
) -> Result<Vec<MemberBatch>, arrow::error::ArrowError> {
    split_within(plan, batch, max_bytes, max_rows, &|piece| {
        transform_checked(plan, piece, max_bytes, max_rows)
    })
}

/// `f` over `batch` in as few pieces as keep each within `MAX_TRANSFORM_BYTES` and
/// `MAX_TRANSFORM_ROWS`, in order.
pub(crate) fn in_pieces<T>(
    plan: &IdentityPlan,
    batch: &RecordBatch,
    f: &dyn Fn(&RecordBatch) -> Result<T, arrow::error::ArrowError>,
) -> Result<Vec<T>, arrow::error::ArrowError> {
    split_within(plan, batch, MAX_TRANSFORM_BYTES, MAX_TRANSFORM_ROWS, f)
}

fn split_within<T>(
    plan: &IdentityPlan,
    batch: &RecordBatch,
    max_bytes: usize,
    max_rows: usize,
    f: &dyn Fn(&RecordBatch) -> Result<T, arrow::error::ArrowError>,
) -> Result<Vec<T>, arrow::error::ArrowError> {
    let rows = batch.num_rows();
    let bytes = input_bytes(plan, batch);
    if bytes <= max_bytes && rows <= max_rows {
        return Ok(vec![f(batch)?]);
    }
    if rows <= 1 {
        return Err(too_large(bytes, max_bytes));
    }
    let half = rows / 2;
    let mut out = split_within(plan, &batch.slice(0, half), max_bytes, max_rows, f)?;
    out.extend(split_within(
        plan,
        &batch.slice(half, rows - half),
        max_bytes,
        max_rows,
        f,
    )?);
    Ok(out)
}

fn too_large(bytes: usize, max_bytes: usize) -> arrow::error::ArrowError {
    arrow::error::ArrowError::ComputeError(format!(
        "a row's identifier values take {bytes} bytes, more than the {} MiB activator normalizes at once; \
         no identifier is that long: check the columns the job maps",
        max_bytes >> 20
    ))
}

/// The bytes of the identifier text the plan reads from `batch` (of its rows only, for a slice).
fn input_bytes(plan: &IdentityPlan, batch: &RecordBatch) -> usize {
    use arrow::datatypes::DataType;
    plan.inputs
        .iter()
        .filter_map(|input| batch.column_by_name(&input.column))
        .map(|a| match a.data_type() {
            t if is_text(t) => text_bytes(a.as_ref()),
            // Binary text, dictionaries: their values, as read whole (an overestimate for a
            // dictionary, whose values repeat).
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => a
                .to_data()
                .buffers()
                .iter()
                .map(|b| b.len())
                .sum::<usize>()
                .min(a.len() << 20),
            // Numbers and dates written as text: a few dozen bytes a value.
            _ => a.len() * 32,
        })
        .sum()
}

/// The bytes of a text array's values (of its rows only, for a slice).
fn text_bytes(a: &dyn Array) -> usize {
    use arrow::array::AsArray;
    use arrow::datatypes::DataType;
    match a.data_type() {
        DataType::Utf8 => {
            let o = a.as_string::<i32>().value_offsets();
            (o[o.len() - 1] - o[0]) as usize
        }
        DataType::LargeUtf8 => {
            let o = a.as_string::<i64>().value_offsets();
            (o[o.len() - 1] - o[0]) as usize
        }
        DataType::Utf8View => a.as_string_view().lengths().map(|l| l as usize).sum(),
        _ => 0,
    }
}

/// Turns one batch of the segment's result into its members; the batch must be within
/// `MAX_TRANSFORM_BYTES` and `MAX_TRANSFORM_ROWS` (see `transform_pieces`), else an error.
pub fn transform(
    plan: &IdentityPlan,
    batch: &RecordBatch,
) -> Result<MemberBatch, arrow::error::ArrowError> {
    transform_checked(plan, batch, MAX_TRANSFORM_BYTES, MAX_TRANSFORM_ROWS)
}

/// A batch's identifier columns normalized, which rows are members, and the counts.
struct NormalizedRows {
    normalized: Vec<Normalized>,
    is_member: Vec<bool>,
    members: Vec<usize>,
    tally: Tally,
}

fn normalize_rows(
    plan: &IdentityPlan,
    batch: &RecordBatch,
    max_bytes: usize,
    max_rows: usize,
) -> Result<NormalizedRows, arrow::error::ArrowError> {
    let bytes = input_bytes(plan, batch);
    if bytes > max_bytes.min(MAX_TRANSFORM_BYTES)
        || batch.num_rows() > max_rows.min(MAX_TRANSFORM_ROWS)
    {
        return Err(arrow::error::ArrowError::ComputeError(format!(
            "a batch of {} rows and {bytes} bytes of identifiers is more than one transform takes; use transform_pieces",
            batch.num_rows()
        )));
    }
    let n = batch.num_rows();
    let mut tally = Tally {
        rows: n as u64,
        ..Tally::default()
    };
    let mut scratch = Scratch::default();
    let column = |name: &str| -> Result<ArrayRef, arrow::error::ArrowError> {
        let c = batch.column_by_name(name).ok_or_else(|| {
            arrow::error::ArrowError::SchemaError(format!("segment result has no column `{name}`"))
        })?;
        if is_text(c.data_type()) {
            // Counted exactly in `bytes` above: within the limit.
            return Ok(c.clone());
        }
        let text = as_strings(c)?;
        // A column whose text form is larger than its type suggested (a dictionary of long
        // values, say): refused here rather than overflowing the 32-bit offsets below.
        let bytes = text_bytes(text.as_ref());
        if bytes > max_bytes.min(MAX_TRANSFORM_BYTES) {
            return Err(too_large(bytes, max_bytes.min(MAX_TRANSFORM_BYTES)));
        }
        Ok(text)
    };

    // The country goes first: its normalized value is the region of the row's phone, state
    // and zip.
    let mut normalized: Vec<Option<Normalized>> = (0..plan.inputs.len()).map(|_| None).collect();
    let mut regions = vec![plan.default_region; n];
    if let Some(ci) = plan.inputs.iter().position(|i| i.kind == Kind::Country) {
        let input = &plan.inputs[ci];
        let array = column(&input.column)?;
        // Read the region with the meta rule: it always yields the alpha-2 code.
        let region_plan = IdentityPlan {
            profile: Profile::Meta,
            ..plan.clone()
        };
        let mut region_tally = Tally::default();
        let countries = normalize_column(
            &region_plan,
            input,
            array.as_ref(),
            &[],
            &mut scratch,
            &mut region_tally,
        );
        for (row, region) in regions.iter_mut().enumerate() {
            if countries.outcome[row] == Outcome::Valid {
                *region = Region::from_ascii_pair(countries.value(row));
            }
        }
        tally.add(&region_tally);
        let mut countries = countries;
        if plan.profile == Profile::Google {
            // Google sends the code raw, in upper case.
            countries.data.make_ascii_uppercase();
        }
        normalized[ci] = Some(countries);
    }
    for (i, input) in plan.inputs.iter().enumerate() {
        if normalized[i].is_none() {
            let array = column(&input.column)?;
            normalized[i] = Some(normalize_column(
                plan,
                input,
                array.as_ref(),
                &regions,
                &mut scratch,
                &mut tally,
            ));
        }
    }
    let normalized: Vec<Normalized> = normalized.into_iter().map(|n| n.expect("set")).collect();

    let mut is_member = vec![false; n];
    for (input, values) in plan.inputs.iter().zip(&normalized) {
        if input.kind.is_strong() {
            for (row, m) in is_member.iter_mut().enumerate() {
                *m |= values.present(row);
            }
        }
    }
    let members: Vec<usize> = (0..n).filter(|&r| is_member[r]).collect();
    tally.members = members.len() as u64;
    tally.without_strong_identifier = (n - members.len()) as u64;

    Ok(NormalizedRows {
        normalized,
        is_member,
        members,
        tally,
    })
}

fn transform_checked(
    plan: &IdentityPlan,
    batch: &RecordBatch,
    max_bytes: usize,
    max_rows: usize,
) -> Result<MemberBatch, arrow::error::ArrowError> {
    let NormalizedRows {
        normalized,
        is_member,
        members,
        tally,
    } = normalize_rows(plan, batch, max_bytes, max_rows)?;
    let encoding = plan.profile.encoding();
    let (mut columns, digests): (Vec<ArrayRef>, Vec<Option<ArrayRef>>) = plan
        .fields
        .iter()
        .map(|(i, f)| output_column(f, &normalized[*i], &members, encoding, plan.keep_digests))
        .unzip();
    let digests = plan
        .keep_digests
        .then(|| digests.into_iter().flatten().collect());
    let keys = member_key(&columns, members.len());
    if !plan.passthrough.is_empty() {
        let mask = BooleanArray::from(is_member);
        for name in &plan.passthrough {
            let c = batch.column_by_name(name).ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!(
                    "segment result has no column `{name}`"
                ))
            })?;
            columns.push(arrow::compute::filter(c, &mask)?);
        }
    }
    let batch = RecordBatch::try_new(plan.output_schema(), columns)?;
    Ok(MemberBatch {
        batch,
        keys,
        tally,
        digests,
    })
}

/// The transform with one output row per input row, as a function inside a query must give
/// (`identity::udf`): the plan's output columns (without passthrough ones) with nulls where a
/// row is not a member, which rows are members, and per row what the tally counts of it beyond
/// rows and members (`pre_hashed`, `<kind>:<reason>`, one a line; null when nothing).
pub struct RowMembers {
    pub columns: Vec<ArrayRef>,
    pub is_member: BooleanArray,
    pub notes: StringArray,
}

/// `RowMembers` of a batch within `MAX_TRANSFORM_BYTES` and `MAX_TRANSFORM_ROWS`.
pub fn transform_rows(
    plan: &IdentityPlan,
    batch: &RecordBatch,
) -> Result<RowMembers, arrow::error::ArrowError> {
    let rows = normalize_rows(plan, batch, MAX_TRANSFORM_BYTES, MAX_TRANSFORM_ROWS)?;
    let encoding = plan.profile.encoding();
    // Output row i of the members goes to input row members[i]; other rows take a null.
    let mut positions: Vec<Option<u32>> = vec![None; batch.num_rows()];
    for (i, &row) in rows.members.iter().enumerate() {
        positions[row] = Some(i as u32);
    }
    let positions = arrow::array::UInt32Array::from(positions);
    let columns = plan
        .fields
        .iter()
        .map(|(i, f)| {
            let (members, _) =
                output_column(f, &rows.normalized[*i], &rows.members, encoding, false);
            arrow::compute::take(members.as_ref(), &positions, None)
        })
        .collect::<Result<Vec<_>, _>>()?;
    use std::fmt::Write;
    let mut notes = arrow::array::StringBuilder::new();
    let mut line = String::new();
    for row in 0..batch.num_rows() {
        line.clear();
        for (input, values) in plan.inputs.iter().zip(&rows.normalized) {
            match values.outcome[row] {
                Outcome::PreHashed => line.push_str("pre_hashed\n"),
                Outcome::Invalid(reason) => {
                    // Into the line's buffer: no allocation per invalid value.
                    let _ = writeln!(line, "{}:{reason}", input.kind);
                }
                Outcome::Valid | Outcome::Missing => {}
            }
        }
        if line.is_empty() {
            notes.append_null();
        } else {
            notes.append_value(line.trim_end_matches('\n'));
        }
    }
    Ok(RowMembers {
        columns,
        is_member: BooleanArray::from(rows.is_member),
        notes: notes.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringArray, StringViewArray};

    #[test]
    fn member_keys_stay_what_earlier_runs_stored() {
        // Every destination's sync state holds the keys of its members: a key computed any other
        // way (a new hash, or a new version of foldhash's) would make each member of an audience
        // look added and each stored key removed. Changing it takes a migration of the state.
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("a".repeat(64)), None])),
            Arc::new(StringArray::from(vec![Some("US"), Some("gb")])),
        ];
        let keys = member_key(&columns, 2);
        let stored = [
            0xe703957fa8ece14a78ef44ed486ff9dd_u128,
            0xccc69e6fd9de12cb43da4bf40880799f_u128,
        ];
        assert_eq!(keys, stored, "{keys:#x?}");
    }

    #[test]
    fn large_batches_are_transformed_in_pieces_with_the_same_members() {
        let plan = plan(Profile::Meta);
        let batch = batch();
        let whole = transform(&plan, &batch).unwrap();
        // Limits so small that every row is a piece of its own.
        let pieces = pieces_within(&plan, &batch, 40, 2).unwrap();
        assert!(pieces.len() >= 3, "{}", pieces.len());
        let keys: Vec<u128> = pieces.iter().flat_map(|p| p.keys.clone()).collect();
        assert_eq!(keys, whole.keys);
        let rows: u64 = pieces.iter().map(|p| p.tally.rows).sum();
        assert_eq!(rows, whole.tally.rows);
        let members: usize = pieces.iter().map(|p| p.batch.num_rows()).sum();
        assert_eq!(members, whole.batch.num_rows());
        // A sliced batch counts only its own rows' bytes, so halves do get smaller.
        assert!(input_bytes(&plan, &batch.slice(0, 1)) < input_bytes(&plan, &batch));
        // A dictionary whose text is larger than its type suggested is refused, not overflowed.
        let long = "x".repeat(90) + "@example.com";
        let dict: arrow::array::DictionaryArray<arrow::datatypes::Int32Type> =
            vec![long.as_str(); 4].into_iter().collect();
        let repeated = RecordBatch::try_from_iter([
            ("email", Arc::new(dict) as ArrayRef),
            (
                "phone",
                Arc::new(StringArray::from(vec![Some("1"); 4])) as ArrayRef,
            ),
            (
                "country",
                Arc::new(StringArray::from(vec![Some("US"); 4])) as ArrayRef,
            ),
        ])
        .unwrap();
        let err = match pieces_within(&plan, &repeated, 300, 100) {
            Err(e) => e,
            Ok(p) => panic!("{} pieces", p.len()),
        };
        assert!(err.to_string().contains("more than the"), "{err}");
        // One value longer than the limit is refused, not split forever.
        let err = match pieces_within(&plan, &batch, 4, 1) {
            Err(e) => e,
            Ok(p) => panic!("{} pieces", p.len()),
        };
        assert!(err.to_string().contains("more than the"), "{err}");
    }

    fn plan(profile: Profile) -> IdentityPlan {
        IdentityPlan::new(
            profile,
            vec![
                InputColumn::new(Kind::Email, "email"),
                InputColumn::new(Kind::Phone, "phone"),
                InputColumn::new(Kind::Country, "country"),
            ],
            None,
            vec![],
        )
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "email",
                Arc::new(StringViewArray::from(vec![
                    Some(" Ann@Example.com"),
                    Some("n/a"),
                    None,
                    Some("ann@example.com"),
                    Some("bo@example.com"),
                ])) as ArrayRef,
            ),
            (
                "phone",
                Arc::new(StringArray::from(vec![
                    Some("(212) 555-0123"),
                    Some("020 7946 0958"),
                    Some("123"),
                    Some("212-555-0123"),
                    None,
                ])) as ArrayRef,
            ),
            (
                "country",
                Arc::new(StringArray::from(vec![
                    Some("US"),
                    Some("GB"),
                    Some("US"),
                    Some("usa"),
                    Some("Narnia"),
                ])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn members_have_a_valid_strong_identifier_and_invalid_values_are_counted() {
        let out = transform(&plan(Profile::Meta), &batch()).unwrap();
        // Row 2 has a null e-mail and an impossible phone: not a member.
        assert_eq!(out.batch.num_rows(), 4);
        assert_eq!(out.tally.members, 4);
        assert_eq!(out.tally.without_strong_identifier, 1);
        assert_eq!(out.tally.invalid["email:shape"], 1);
        assert_eq!(out.tally.invalid["phone:not_possible"], 1);
        // An unknown country is missing, not invalid.
        assert!(!out.tally.invalid.keys().any(|k| k.starts_with("country")));
        let email = out.batch.column(0).as_string::<i32>();
        assert_eq!(
            email.value(0),
            hash::hash_to_string("ann@example.com", Encoding::Hex)
        );
        assert!(email.is_null(1));
        let phone = out.batch.column(1).as_string::<i32>();
        assert_eq!(
            phone.value(1),
            hash::hash_to_string("442079460958", Encoding::Hex)
        );
        // Rows 0 and 3 are the same person written differently: the same key.
        assert_eq!(out.keys[0], out.keys[2]);
        assert_ne!(out.keys[0], out.keys[3]);
    }

    #[test]
    fn digests_kept_as_bytes_are_those_of_the_text() {
        // Repeats within the batch (copied digests), pre-hashed values, nulls among the members
        // (spread to their rows), in hex and in Base64.
        let pre_hashed = hash::hash_to_string("pre@example.com", Encoding::Hex).to_uppercase();
        let emails = [
            Some(" Ann@Example.com"),
            None,
            Some(pre_hashed.as_str()),
            Some("n/a"),
            Some("ann@example.com"),
            Some("bo@example.com"),
        ];
        let phones = [
            None,
            Some("212-555-0123"),
            Some("(212) 555-0123"),
            Some("1"),
        ];
        let rows = 40;
        let batch = RecordBatch::try_from_iter([
            (
                "email",
                Arc::new(StringArray::from_iter((0..rows).map(|i| emails[i % 6]))) as ArrayRef,
            ),
            (
                "phone",
                Arc::new(StringArray::from_iter((0..rows).map(|i| phones[i % 4]))) as ArrayRef,
            ),
            (
                "country",
                Arc::new(StringArray::from_iter(
                    (0..rows).map(|i| (i % 5 != 0).then_some("US")),
                )) as ArrayRef,
            ),
        ])
        .unwrap();
        for profile in [Profile::Meta, Profile::Uid2] {
            let out = transform(&plan(profile).keeping_digests(), &batch).unwrap();
            let digests = out.digests.expect("kept");
            let hashed = plan(profile).hashed_columns();
            assert_eq!(digests.len(), hashed.len());
            for (name, digests) in hashed.iter().zip(&digests) {
                let text = out.batch.column_by_name(name).unwrap().as_string::<i32>();
                let digests = digests.as_fixed_size_binary();
                assert_eq!(digests.len(), text.len());
                assert!(text.null_count() > 0, "{name} has nulls among the members");
                for row in 0..text.len() {
                    assert_eq!(digests.is_null(row), text.is_null(row), "{name} row {row}");
                    let bytes: &[u8; 32] = digests.value(row).try_into().unwrap();
                    if text.is_null(row) {
                        assert_eq!(bytes, &[0; 32], "a null's slot is zero");
                        continue;
                    }
                    let mut encoded = vec![0u8; hash::encoded_len(profile.encoding())];
                    hash::encode_digest(bytes, profile.encoding(), &mut encoded);
                    assert_eq!(encoded, text.value(row).as_bytes(), "{name} row {row}");
                }
            }
            let plain = transform(&plan(profile), &batch).unwrap();
            assert!(plain.digests.is_none());
            assert_eq!(plain.batch, out.batch, "the text is the same either way");
            assert_eq!(plain.keys, out.keys);
        }
    }

    #[test]
    fn google_sends_the_country_raw_in_upper_case() {
        let out = transform(&plan(Profile::Google), &batch()).unwrap();
        let names: Vec<_> = out
            .batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["email_sha256", "phone_sha256", "country"]);
        let country = out.batch.column(2).as_string::<i32>();
        assert_eq!(country.value(0), "US");
        assert_eq!(country.value(2), "US");
    }

    #[test]
    fn a_view_column_finds_repeats_by_their_views_and_normalizes_as_a_string_column_does() {
        // Short values lie in their views; long ones are where their views point. A builder
        // that deduplicates gives a repeated long value one view; one that does not gives each
        // copy a view of its own, and then each copy is normalized itself, to the same value.
        let values = [
            Some("Ann.Lee@Example.com"),
            Some("bo@x.io"),
            None,
            Some("Ann.Lee@Example.com"),
            Some("bo@x.io"),
            Some("not an e-mail at all"),
            Some("not an e-mail at all"),
        ];
        let plan = IdentityPlan::new(
            Profile::Meta,
            vec![InputColumn::new(Kind::Email, "email")],
            None,
            vec![],
        );
        let normalized = |array: &dyn Array| {
            let mut tally = Tally::default();
            let regions = vec![None; array.len()];
            let mut scratch = Scratch::default();
            let out = normalize_column(
                &plan,
                &plan.inputs[0],
                array,
                &regions,
                &mut scratch,
                &mut tally,
            );
            let texts: Vec<Vec<u8>> = (0..array.len()).map(|r| out.value(r).to_vec()).collect();
            (texts, out.outcome, out.same_as, tally.invalid)
        };
        let strings = normalized(&StringArray::from(values.to_vec()));
        let mut shared = arrow::array::StringViewBuilder::new().with_deduplicate_strings();
        values.iter().for_each(|v| shared.append_option(*v));
        let shared = normalized(&shared.finish());
        let copies = normalized(&StringViewArray::from(values.to_vec()));
        for (name, views) in [("shared", &shared), ("copies", &copies)] {
            assert_eq!(views.0, strings.0, "{name}: normalized values");
            assert_eq!(views.1, strings.1, "{name}: outcomes");
            assert_eq!(views.3, strings.3, "{name}: invalid values counted");
        }
        assert_eq!(strings.0[0], b"ann.lee@example.com");
        assert_eq!(strings.3["email:shape"], 2);
        // Repeats: by text in a string column; by view, the short ones and the shared long ones.
        let repeats = [NOT_SEEN, NOT_SEEN, NOT_SEEN, 0, 1, NOT_SEEN, 5];
        assert_eq!(strings.2, repeats);
        assert_eq!(shared.2, repeats);
        let long_copies_apart = [
            NOT_SEEN, NOT_SEEN, NOT_SEEN, NOT_SEEN, 1, NOT_SEEN, NOT_SEEN,
        ];
        assert_eq!(copies.2, long_copies_apart);
    }

    #[test]
    fn repeated_values_are_worked_out_once_with_the_same_result() {
        // Names repeat in every case and padding; phones repeat in two countries, where the
        // same digits are valid in one and not the other; e-mails are all distinct.
        let n = 3000;
        for view in [false, true] {
            repeated_values_in(n, view);
        }
    }

    fn repeated_values_in(n: usize, view: bool) {
        let names = [" JOSÉ", "josé", "José\u{a0}", "1234", "O'Brien"];
        let countries = ["GB", "US"];
        // Views (what Parquet gives) or plain strings.
        let strings = |f: &dyn Fn(usize) -> String| -> ArrayRef {
            let values = (0..n).map(f).collect::<Vec<_>>();
            if view {
                Arc::new(StringViewArray::from(values))
            } else {
                Arc::new(StringArray::from(values))
            }
        };
        let batch = RecordBatch::try_from_iter([
            ("email", strings(&|i| format!("p{i}@example.com"))),
            ("phone", strings(&|_| "020 7946 0958".to_string())),
            (
                "first_name",
                strings(&|i| names[i % names.len()].to_string()),
            ),
            ("country", strings(&|i| countries[(i / 5) % 2].to_string())),
        ])
        .unwrap();
        let plan = IdentityPlan::new(
            Profile::Meta,
            vec![
                InputColumn::new(Kind::Email, "email"),
                InputColumn::new(Kind::Phone, "phone"),
                InputColumn::new(Kind::FirstName, "first_name"),
                InputColumn::new(Kind::Country, "country"),
            ],
            None,
            vec![],
        );
        let out = transform(&plan, &batch).unwrap();
        assert_eq!(out.batch.num_rows(), n, "every row has an e-mail");
        let column = |name: &str| {
            let i = out.batch.schema().index_of(name).unwrap();
            out.batch.column(i).as_string::<i32>().clone()
        };
        let (email, phone, first) = (
            column("email_sha256"),
            column("phone_sha256"),
            column("first_name_sha256"),
        );
        let hex = |v: &str| hash::hash_to_string(v, Encoding::Hex);
        for row in 0..n {
            assert_eq!(email.value(row), hex(&format!("p{row}@example.com")));
            match names[row % names.len()] {
                "1234" => assert!(first.is_null(row)),
                "O'Brien" => assert_eq!(first.value(row), hex("obrien")),
                _ => assert_eq!(first.value(row), hex("josé"), "row {row}"),
            }
            if countries[(row / 5) % 2] == "GB" {
                assert_eq!(phone.value(row), hex("442079460958"), "row {row}");
            } else {
                assert!(phone.is_null(row), "a GB national number is no US phone");
            }
        }
        assert_eq!(out.tally.invalid["first_name:no_letters"], (n / 5) as u64);
        assert_eq!(
            out.tally.invalid.values().sum::<u64>(),
            (n / 5 + n / 2) as u64
        );
    }
}
