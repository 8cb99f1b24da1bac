//! Arrow -> JSON: one `flight-processed-data` payload per row, every column present
//! (nulls explicit), non-finite floats written as null so the output is always valid JSON.
//!
//! The columns the processed contract uses (strings, integers, floats, booleans, UTC
//! timestamps, lists of those) are written by a row encoder made for this: all rows of a batch
//! into one buffer (each row's payload is a slice of it), keys escaped once per batch, integers
//! by lexical-core, floats as serde_json writes them, timestamps as RFC 3339 by hand: what
//! arrow-json writes, byte for byte but for the floats, whose text reads back as the same
//! value but is not always spelled as arrow-json spells it (`1e-7` for `1.0e-7`). A batch
//! with any other column type (a user's features.sql may add one) goes through arrow-json's
//! writer.

use arrow::array::{
    Array, ArrowPrimitiveType, AsArray, BooleanArray, GenericListArray, GenericStringArray,
    PrimitiveArray, RecordBatch, StringViewArray,
};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::json::writer::{LineDelimited, WriterBuilder};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat};

use crate::error::Result;
use crate::json_write::{Float, Integer, write_float, write_lexical, write_rfc3339, write_str};

/// Encodes each row of `batch` as one JSON object.
pub fn to_json_rows(batch: &RecordBatch) -> Result<JsonRows> {
    match columns(batch) {
        Some(columns) => Ok(encode_rows(batch.num_rows(), &columns)),
        None => with_arrow_json(batch),
    }
}

/// The JSON objects of a batch's rows, written one after another into one buffer (one
/// allocation per batch, not per row); each row is a slice of it, or a [`Bytes`] that shares it.
#[derive(Debug, Clone)]
pub struct JsonRows {
    buf: Bytes,
    /// Each row's `start..end` in `buf`.
    spans: Vec<(usize, usize)>,
}

impl JsonRows {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Row `i`'s JSON.
    pub fn get(&self, i: usize) -> &[u8] {
        let (start, end) = self.spans[i];
        &self.buf[start..end]
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.spans.iter().map(|&(s, e)| &self.buf[s..e])
    }

    /// Each row as a [`Bytes`] sharing the batch's buffer (no copy).
    pub fn into_payloads(self) -> impl ExactSizeIterator<Item = Bytes> {
        let buf = self.buf;
        self.spans.into_iter().map(move |(s, e)| buf.slice(s..e))
    }
}

/// One column as the row encoder reads it.
enum Column<'a> {
    Utf8(&'a GenericStringArray<i32>),
    LargeUtf8(&'a GenericStringArray<i64>),
    Utf8View(&'a StringViewArray),
    Bool(&'a BooleanArray),
    I8(&'a PrimitiveArray<Int8Type>),
    I16(&'a PrimitiveArray<Int16Type>),
    I32(&'a PrimitiveArray<Int32Type>),
    I64(&'a PrimitiveArray<Int64Type>),
    U8(&'a PrimitiveArray<UInt8Type>),
    U16(&'a PrimitiveArray<UInt16Type>),
    U32(&'a PrimitiveArray<UInt32Type>),
    U64(&'a PrimitiveArray<UInt64Type>),
    F32(&'a PrimitiveArray<Float32Type>),
    F64(&'a PrimitiveArray<Float64Type>),
    /// Microseconds, UTC.
    TimestampUtc(&'a PrimitiveArray<TimestampMicrosecondType>),
    /// A list (`sensors`) of values of a type the encoder writes.
    List(&'a GenericListArray<i32>, Box<Column<'a>>),
}

/// The row encoder's view of every column, with its key and the byte before it (`{"name":`
/// or `,"name":`); `None` when a column has a type it does not write.
fn columns(batch: &RecordBatch) -> Option<Vec<(Prefix, Column<'_>)>> {
    let schema = batch.schema();
    let mut out = Vec::with_capacity(batch.num_columns());
    for (i, (field, array)) in schema.fields().iter().zip(batch.columns()).enumerate() {
        let column = column(array.as_ref())?;
        let mut key = Vec::with_capacity(field.name().len() + 4);
        key.push(if i == 0 { b'{' } else { b',' });
        write_str(&mut key, field.name());
        key.push(b':');
        out.push((Prefix::new(key), column));
    }
    Some(out)
}

/// What [`Prefix`] copies as one fixed-size block.
const PADDED: usize = 32;

/// A column's key with the byte before it. Keys of up to [`PADDED`] bytes are kept padded
/// and appended as one block of that fixed size (a copy the compiler inlines, where a
/// copy of a length known only at run time is a call to `memcpy`), then cut to length.
struct Prefix {
    padded: [u8; PADDED],
    bytes: Vec<u8>,
}

impl Prefix {
    fn new(bytes: Vec<u8>) -> Self {
        let mut padded = [0; PADDED];
        if bytes.len() <= PADDED {
            padded[..bytes.len()].copy_from_slice(&bytes);
        }
        Self { padded, bytes }
    }

    fn write(&self, buf: &mut Vec<u8>) {
        let len = self.bytes.len();
        if len <= PADDED {
            let start = buf.len();
            buf.extend_from_slice(&self.padded);
            buf.truncate(start + len);
        } else {
            buf.extend_from_slice(&self.bytes);
        }
    }
}

fn column(a: &dyn Array) -> Option<Column<'_>> {
    Some(match a.data_type() {
        DataType::Utf8 => Column::Utf8(a.as_string::<i32>()),
        DataType::LargeUtf8 => Column::LargeUtf8(a.as_string::<i64>()),
        DataType::Utf8View => Column::Utf8View(a.as_string_view()),
        DataType::Boolean => Column::Bool(a.as_boolean()),
        DataType::Int8 => Column::I8(a.as_primitive()),
        DataType::Int16 => Column::I16(a.as_primitive()),
        DataType::Int32 => Column::I32(a.as_primitive()),
        DataType::Int64 => Column::I64(a.as_primitive()),
        DataType::UInt8 => Column::U8(a.as_primitive()),
        DataType::UInt16 => Column::U16(a.as_primitive()),
        DataType::UInt32 => Column::U32(a.as_primitive()),
        DataType::UInt64 => Column::U64(a.as_primitive()),
        DataType::Float32 => Column::F32(a.as_primitive()),
        DataType::Float64 => Column::F64(a.as_primitive()),
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz))
            if matches!(tz.as_ref(), "UTC" | "+00:00") =>
        {
            Column::TimestampUtc(a.as_primitive())
        }
        DataType::List(_) => {
            let list = a.as_list::<i32>();
            Column::List(list, Box::new(column(list.values().as_ref())?))
        }
        _ => return None,
    })
}

fn encode_rows(rows: usize, columns: &[(Prefix, Column<'_>)]) -> JsonRows {
    let mut buf = Vec::new();
    let mut spans = Vec::with_capacity(rows);
    for row in 0..rows {
        let start = buf.len();
        // Each key comes with the byte before it: `{"first":`, `,"next":`.
        for (prefix, column) in columns {
            prefix.write(&mut buf);
            column.write(row, &mut buf);
        }
        if columns.is_empty() {
            buf.push(b'{');
        }
        buf.push(b'}');
        spans.push((start, buf.len()));
        if row == 0 {
            // Rows of one batch are about the same size (the first can be short: nulls where
            // an aircraft has no earlier report): one allocation for all of them. Room not
            // written to is never touched, so it costs address space, not memory.
            buf.reserve((buf.len() * 3 / 2 + 64) * (rows - 1));
        }
    }
    JsonRows {
        buf: Bytes::from(buf),
        spans,
    }
}

impl Column<'_> {
    fn write(&self, row: usize, buf: &mut Vec<u8>) {
        match self {
            Column::Utf8(a) => nullable(*a, row, buf, |b| write_str(b, a.value(row))),
            Column::LargeUtf8(a) => nullable(*a, row, buf, |b| write_str(b, a.value(row))),
            Column::Utf8View(a) => nullable(*a, row, buf, |b| write_str(b, a.value(row))),
            Column::Bool(a) => nullable(*a, row, buf, |b| {
                b.extend_from_slice(if a.value(row) { b"true" } else { b"false" })
            }),
            Column::I8(a) => number(a, row, buf),
            Column::I16(a) => number(a, row, buf),
            Column::I32(a) => number(a, row, buf),
            Column::I64(a) => number(a, row, buf),
            Column::U8(a) => number(a, row, buf),
            Column::U16(a) => number(a, row, buf),
            Column::U32(a) => number(a, row, buf),
            Column::U64(a) => number(a, row, buf),
            Column::F32(a) => float(a, row, buf),
            Column::F64(a) => float(a, row, buf),
            Column::TimestampUtc(a) => nullable(*a, row, buf, |b| {
                b.push(b'"');
                write_timestamp(b, a.value(row));
                b.push(b'"');
            }),
            Column::List(a, values) => nullable(*a, row, buf, |b| {
                b.push(b'[');
                let offsets = a.value_offsets();
                for (i, v) in (offsets[row] as usize..offsets[row + 1] as usize).enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    values.write(v, b);
                }
                b.push(b']');
            }),
        }
    }
}

fn nullable<A: Array + ?Sized>(
    array: &A,
    row: usize,
    buf: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>),
) {
    if array.is_null(row) {
        buf.extend_from_slice(b"null");
    } else {
        write(buf);
    }
}

fn number<T>(array: &PrimitiveArray<T>, row: usize, buf: &mut Vec<u8>)
where
    T: ArrowPrimitiveType,
    T::Native: Integer,
{
    nullable(array, row, buf, |b| write_lexical(b, array.value(row)));
}

fn float<T>(array: &PrimitiveArray<T>, row: usize, buf: &mut Vec<u8>)
where
    T: ArrowPrimitiveType,
    T::Native: Float,
{
    nullable(array, row, buf, |b| write_float(b, array.value(row)));
}

/// Microseconds since the epoch as RFC 3339 in UTC (see [`write_rfc3339`]).
fn write_timestamp(buf: &mut Vec<u8>, us: i64) {
    let nanos = us.rem_euclid(1_000_000) as u32 * 1_000;
    if !write_rfc3339(buf, us.div_euclid(1_000_000), nanos) {
        // Years chrono writes with a sign; rare enough to leave to chrono.
        let text = DateTime::from_timestamp_micros(us)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            .unwrap_or_default();
        buf.extend_from_slice(text.as_bytes());
    }
}

/// arrow-json's writer: every type it knows.
fn with_arrow_json(batch: &RecordBatch) -> Result<JsonRows> {
    let mut buf = Vec::with_capacity(batch.num_rows() * 900);
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, LineDelimited>(&mut buf);
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    // JSON strings escape newlines, so each line is exactly one row.
    let mut spans = Vec::with_capacity(batch.num_rows());
    let mut start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            if i > start {
                spans.push((start, i));
            }
            start = i + 1;
        }
    }
    if buf.len() > start {
        spans.push((start, buf.len()));
    }
    Ok(JsonRows {
        buf: Bytes::from(buf),
        spans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Float32Array, Float64Array, Int64Array, LargeStringArray, ListArray, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Schema};

    /// Every type the row encoder writes, with the values that need care.
    fn all_types(
        floats: Vec<Option<f64>>,
        stamps: Vec<Option<i64>>,
        texts: Vec<Option<String>>,
    ) -> RecordBatch {
        let n = floats.len();
        assert!(stamps.len() == n && texts.len() == n);
        let ints: Int64Array = (0..n as i64)
            .map(|i| match i % 4 {
                0 => None,
                1 => Some(i64::MIN),
                2 => Some(i64::MAX),
                _ => Some(-i),
            })
            .collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("a \"key\"\n", Arc::new(StringArray::from(texts.clone()))),
            ("large", Arc::new(LargeStringArray::from(texts.clone()))),
            ("view", Arc::new(StringViewArray::from(texts))),
            ("f64", Arc::new(Float64Array::from(floats.clone()))),
            (
                "f32",
                Arc::new(Float32Array::from(
                    floats
                        .iter()
                        .map(|f| f.map(|f| f as f32))
                        .collect::<Vec<_>>(),
                )),
            ),
            ("i64", Arc::new(ints.clone())),
            ("i32", Arc::new(ints.unary::<_, Int32Type>(|v| v as i32))),
            ("i16", Arc::new(ints.unary::<_, Int16Type>(|v| v as i16))),
            ("u64", Arc::new(ints.unary::<_, UInt64Type>(|v| v as u64))),
            ("u8", Arc::new(ints.unary::<_, UInt8Type>(|v| v as u8))),
            (
                "bool",
                Arc::new(BooleanArray::from(
                    ints.iter().map(|v| v.map(|v| v > 0)).collect::<Vec<_>>(),
                )),
            ),
            (
                "t",
                Arc::new(TimestampMicrosecondArray::from(stamps).with_timezone("UTC")),
            ),
            (
                "list",
                Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
                    ints.iter().map(|v| match v {
                        None => None,
                        Some(v) if v % 3 == 0 => Some(vec![]),
                        Some(v) => Some(vec![Some(v as i32), None, Some(7)]),
                    }),
                )),
            ),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    /// The row encoder against arrow-json's writer: every column but the floats byte for
    /// byte; each float as serde_json writes it, which reads back as the same value.
    /// (Not arrow-json's float text: where two shortest texts read back as the same value
    /// the two formatters can pick differently; `-215128600.0` and `-215128610.0` are the
    /// same `f32`.)
    fn assert_same_as_arrow_json(batch: &RecordBatch) {
        assert!(columns(batch).is_some(), "the row encoder takes this batch");
        let whole = to_json_rows(batch).unwrap();
        assert_eq!(whole.len(), batch.num_rows());
        // Rows handed out as shared buffers are the same bytes.
        let payloads: Vec<Bytes> = whole.clone().into_payloads().collect();
        assert_eq!(payloads.len(), whole.len());
        assert!(payloads.iter().zip(whole.iter()).all(|(p, r)| p == r));
        let schema = batch.schema();
        let is_float = |t: &DataType| matches!(t, DataType::Float32 | DataType::Float64);
        let others: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| !is_float(schema.field(i).data_type()))
            .collect();
        let others = batch.project(&others).unwrap();
        let ours = to_json_rows(&others).unwrap();
        let theirs = with_arrow_json(&others).unwrap();
        for (a, b) in ours.iter().zip(theirs.iter()) {
            assert_eq!(
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b),
                "row encoder vs arrow-json"
            );
        }
        /// Each value of a float column as serde_json writes it, checked to read back as
        /// the same value (`null` for none or a non-finite one).
        fn serde_texts<T: ArrowPrimitiveType>(array: &dyn Array) -> Vec<String>
        where
            T::Native: serde::Serialize + std::str::FromStr + Float + std::fmt::Debug,
        {
            let values = array.as_primitive::<T>().iter();
            values
                .map(|v| {
                    let text = serde_json::to_string(&v).unwrap();
                    match v {
                        Some(v) if v.is_finite() => {
                            let back = text.parse::<T::Native>().ok();
                            assert_eq!(back, Some(v), "{text}");
                        }
                        _ => assert_eq!(text, "null"),
                    }
                    text
                })
                .collect()
        }
        let mut float_texts = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let serde = match field.data_type() {
                DataType::Float64 => serde_texts::<Float64Type>(batch.column(i)),
                DataType::Float32 => serde_texts::<Float32Type>(batch.column(i)),
                _ => continue,
            };
            let rows = to_json_rows(&batch.project(&[i]).unwrap()).unwrap();
            let key = serde_json::to_string(field.name()).unwrap();
            for (row, text) in rows.iter().zip(&serde) {
                assert_eq!(String::from_utf8_lossy(row), format!("{{{key}:{text}}}"));
            }
            float_texts.push((field.name(), serde));
        }
        // Whole rows: arrow-json's values with serde_json's floats.
        let theirs = with_arrow_json(batch).unwrap();
        assert_eq!(theirs.len(), whole.len());
        let value = |row: &[u8]| serde_json::from_slice::<serde_json::Value>(row).unwrap();
        for (row, (a, b)) in whole.iter().zip(theirs.iter()).enumerate() {
            let mut expected = value(b);
            for (name, texts) in &float_texts {
                expected[name.as_str()] = serde_json::from_str(&texts[row]).unwrap();
            }
            assert_eq!(value(a), expected, "{}", String::from_utf8_lossy(a));
        }
    }

    #[test]
    fn the_row_encoder_writes_what_arrow_json_writes() {
        let floats = vec![
            None,
            Some(0.0),
            Some(-0.0),
            Some(0.1),
            Some(1.0),
            Some(-123.456),
            Some(1e-7),
            Some(1e21),
            Some(5e-324),
            Some(f64::MAX),
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            Some(36_000.000_001),
            Some(1e16),
            Some(-1.5e-7),
        ];
        let stamps = vec![
            None,
            Some(0),
            Some(-1),
            Some(1_795_600_800_000_000),
            Some(1_795_600_800_123_000),
            Some(1_795_600_800_123_456),
            Some(951_782_400_000_001),     // 2000-02-29
            Some(-62_135_596_800_000_000), // 0001-01-01
            Some(253_402_300_799_999_999), // 9999-12-31T23:59:59.999999
            Some(253_402_300_800_000_000), // +10000
            Some(-62_167_219_200_000_001), // before year 0
            Some(-86_400_000_000 * 365),
            Some(4_107_542_400_000_500),
            Some(1_000),
            Some(1_795_600_800_000_001),
            Some(1_795_600_800_999_999),
        ];
        let texts = vec![
            None,
            Some(String::new()),
            Some("plain".into()),
            Some("quote \" and \\ backslash".into()),
            Some("new\nline\r\ttab".into()),
            Some("\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f}".into()),
            Some("ünïcödé ✈ 𝄞".into()),
            Some("/ slash".into()),
            Some("DLH4AB  ".into()),
            Some("x".repeat(300)),
            Some("\u{2028}\u{2029}".into()),
            Some("end\\".into()),
            Some("\"".into()),
            Some("7700".into()),
            Some("\u{7f}\u{80}".into()),
            None,
        ];
        assert_same_as_arrow_json(&all_types(floats, stamps, texts));
    }

    /// What the shipped SQL files produce, with the stamp the pipeline adds, is written by
    /// the row encoder (not the slower fallback).
    #[tokio::test]
    async fn the_processed_contract_takes_the_row_encoder() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let vars = [
            ("grid_cell_deg".to_string(), "1.0".to_string()),
            ("window_seconds".to_string(), "600".to_string()),
        ]
        .into();
        let sql = crate::pipeline::sql::SqlPipeline::load(
            &root.join("sql"),
            &vars,
            &crate::udf::Scorer::unfitted(),
        )
        .await
        .unwrap();
        let out = sql
            .run(
                RecordBatch::new_empty(crate::pipeline::decode::raw_with_seq_schema()),
                crate::pipeline::continuity::previous_table(std::iter::empty()).unwrap(),
            )
            .await
            .unwrap();
        let processed = crate::pipeline::finish(&out.features, 0).unwrap();
        assert!(processed.schema().field_with_name("sensors").is_ok());
        assert!(columns(&processed).is_some(), "{:?}", processed.schema());
    }

    #[test]
    fn other_types_go_through_arrow_json() {
        let batch = RecordBatch::try_from_iter(vec![(
            "d",
            Arc::new(arrow::array::Date32Array::from(vec![Some(1), None])) as ArrayRef,
        )])
        .unwrap();
        assert!(columns(&batch).is_none());
        let rows = to_json_rows(&batch).unwrap();
        assert_eq!(
            rows.iter().collect::<Vec<_>>(),
            [&br#"{"d":"1970-01-02"}"#[..], br#"{"d":null}"#]
        );
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        #[test]
        fn any_values_encode_as_arrow_json_does(
            rows in proptest::collection::vec(
                (
                    proptest::option::of(proptest::num::f64::ANY),
                    // Whole seconds, milliseconds or microseconds: the three fraction widths.
                    proptest::option::of(
                        (-62_135_596_800i64..253_402_300_800, 0u32..3, 0i64..1_000_000)
                            .prop_map(|(s, k, f)| s * 1_000_000 + [0, f / 1000 * 1000, f][k as usize]),
                    ),
                    proptest::option::of(".{0,12}"),
                ),
                1..20,
            )
        ) {
            let (floats, rest): (Vec<_>, Vec<_>) = rows.into_iter().map(|(f, t, s)| (f, (t, s))).unzip();
            let (stamps, texts): (Vec<_>, Vec<_>) = rest.into_iter().unzip();
            assert_same_as_arrow_json(&all_types(floats, stamps, texts));
        }
    }

    #[test]
    fn one_object_per_row_with_explicit_nulls_and_utc_timestamps() {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("f", DataType::Float64, true),
            Field::new("t", crate::schema::timestamp_type(), false),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec![Some("a\nb"), None])),
                Arc::new(Float64Array::from(vec![Some(f64::NAN), Some(1.5)])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_795_600_800_000_000, 0])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let rows = to_json_rows(&batch).unwrap();
        assert_eq!(rows.len(), 2);
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::from_slice(r).unwrap())
            .collect();
        assert_eq!(v[0]["s"], "a\nb");
        assert!(v[0]["f"].is_null());
        assert!(v[1]["s"].is_null() && v[1].as_object().unwrap().contains_key("s"));
        let t = v[0]["t"].as_str().unwrap();
        assert_eq!(
            chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp(),
            1_795_600_800,
            "{t}"
        );
    }
}
