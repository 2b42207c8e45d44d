//! The Arrow schema of one dataset row (one protein chain) and the conversions between
//! [`ChainRecord`]s and Arrow record batches.
//!
//! Big arrays are flat lists of primitives (row-major, the logical shape in each column's
//! doc), so a reader pays no per-element parsing and pyarrow, DuckDB and Polars read
//! them as plain lists. The schema carries [`SCHEMA_VERSION`] and the residue-constant
//! and residue-name table versions in its key-value metadata.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float32Array, Int64Array, ListArray,
    PrimitiveArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float32Type, Int8Type, Int32Type, Schema, SchemaRef,
    UInt8Type,
};
use scalefold_featurize::ChainRecord;
use scalefold_featurize::residue_constants::RESIDUE_CONSTANTS_VERSION;
use scalefold_featurize::templates::TemplateFeatures;

use crate::job::IngestError;
use crate::residue_names::RESIDUE_NAME_TABLE_VERSION;

/// Version of this schema; bump with any change of columns or their meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// Column holding the source key (the structure file a row came from).
pub const SOURCE_KEY_COLUMN: &str = "source_key";
/// Column holding the sequence length (the dataset's length statistics use it).
pub const LENGTH_COLUMN: &str = "seq_length";

/// One dataset row: a chain's static features plus where it came from and its cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainRow {
    /// Source key: the structure file, relative to the structures root.
    pub source_key: String,
    /// The chain's static features.
    pub record: ChainRecord,
    /// Cluster of the chain (line number in the cluster file, 0-based); -1 when the
    /// chain is in no cluster.
    pub cluster_id: i64,
    /// Number of chains in the cluster (1 for an unclustered chain).
    pub cluster_size: u32,
    /// xxh3-64 over the bytes of every input file the row was built from, in a fixed order.
    pub source_checksum: u64,
}

impl ChainRow {
    /// xxh3-64 over the row's feature arrays (what the resume test and `verify`-style
    /// checks compare); independent of the source and cluster columns.
    pub fn features_checksum(&self) -> u64 {
        features_checksum(&self.record)
    }
}

/// xxh3-64 of a record's features: every field in declaration order, little-endian.
pub fn features_checksum(r: &ChainRecord) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let text = |h: &mut xxhash_rust::xxh3::Xxh3, s: &str| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    text(&mut h, &r.chain_id);
    text(&mut h, &r.sequence);
    h.update(bytemuck_i8(&r.aatype));
    h.update(&le_bytes(&r.residue_index));
    h.update(&r.seq_length.to_le_bytes());
    h.update(bytemuck_i8(&r.between_segment_residues));
    h.update(&le_bytes(&r.all_atom_positions));
    h.update(&r.all_atom_mask);
    h.update(&r.resolution.to_le_bytes());
    text(&mut h, r.release_date.as_deref().unwrap_or("\u{0}"));
    text(&mut h, &r.structure_method);
    h.update(&[r.is_distillation as u8]);
    h.update(&r.msa);
    h.update(&le_bytes(&r.deletion_matrix));
    h.update(&r.num_alignments.to_le_bytes());
    r.msa_species_ids.iter().for_each(|s| text(&mut h, s));
    let t = &r.templates;
    h.update(&t.num_templates.to_le_bytes());
    h.update(bytemuck_i8(&t.aatype));
    h.update(&le_bytes(&t.all_atom_positions));
    h.update(&t.all_atom_mask);
    h.update(&le_bytes(&t.sum_probs));
    t.domain_names.iter().for_each(|s| text(&mut h, s));
    h.digest()
}

/// Plain numbers whose memory is their little-endian bytes on a little-endian target.
trait PlainNumber: Copy {
    fn extend_le(self, out: &mut Vec<u8>);
}

macro_rules! plain_number {
    ($($t:ty),*) => {$(
        impl PlainNumber for $t {
            fn extend_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
plain_number!(i32, u16, f32);

/// The little-endian bytes of a slice of numbers, without copying on little-endian
/// targets (hashing them element by element cost 4 % of the ingest job, measured).
fn le_bytes<T: PlainNumber>(values: &[T]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: `PlainNumber` is implemented only for i32, u16 and f32: no padding,
        // every byte initialised, alignment of u8 is 1; on a little-endian target their
        // in-memory bytes are their little-endian bytes.
        std::borrow::Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        })
    } else {
        let mut out = Vec::with_capacity(std::mem::size_of_val(values));
        values.iter().for_each(|v| v.extend_le(&mut out));
        std::borrow::Cow::Owned(out)
    }
}

fn bytemuck_i8(values: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size, alignment and validity (every bit pattern).
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len()) }
}

fn list_of(name: &str, item: DataType) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", item, false))),
        false,
    )
}

/// The dataset schema (shared; built once).
pub fn chain_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let fields = vec![
            Field::new(SOURCE_KEY_COLUMN, DataType::Utf8, false),
            Field::new("chain_id", DataType::Utf8, false),
            Field::new("sequence", DataType::Utf8, false),
            Field::new(LENGTH_COLUMN, DataType::UInt32, false),
            // [n]
            list_of("aatype", DataType::Int8),
            list_of("residue_index", DataType::Int32),
            list_of("between_segment_residues", DataType::Int8),
            // [n][37][3] and [n][37]
            list_of("all_atom_positions", DataType::Float32),
            list_of("all_atom_mask", DataType::UInt8),
            Field::new("resolution", DataType::Float32, false),
            Field::new("release_date", DataType::Utf8, true),
            Field::new("structure_method", DataType::Utf8, false),
            Field::new("is_distillation", DataType::Boolean, false),
            Field::new("num_alignments", DataType::UInt32, false),
            // [m][n]: MSA ids as bytes, and deletions as little-endian u16 pairs (binary
            // values: one value per row, so encoding costs nothing per element).
            Field::new("msa", DataType::Binary, false),
            Field::new("deletion_matrix", DataType::Binary, false),
            // [m]
            list_of("msa_species_ids", DataType::Utf8),
            Field::new("num_templates", DataType::UInt32, false),
            // [t][n], [t][n][37][3], [t][n][37], [t], [t]
            list_of("template_aatype", DataType::Int8),
            list_of("template_all_atom_positions", DataType::Float32),
            list_of("template_all_atom_mask", DataType::UInt8),
            list_of("template_sum_probs", DataType::Float32),
            list_of("template_domain_names", DataType::Utf8),
            Field::new("cluster_id", DataType::Int64, false),
            Field::new("cluster_size", DataType::UInt32, false),
            Field::new("source_checksum", DataType::UInt64, false),
            Field::new("features_checksum", DataType::UInt64, false),
        ];
        let metadata: HashMap<String, String> = [
            ("scalefold.schema", "chain".to_string()),
            ("scalefold.schema_version", SCHEMA_VERSION.to_string()),
            (
                "scalefold.residue_constants_version",
                RESIDUE_CONSTANTS_VERSION.to_string(),
            ),
            (
                "scalefold.residue_name_table_version",
                RESIDUE_NAME_TABLE_VERSION.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Arc::new(Schema::new_with_metadata(fields, metadata))
    });
    SCHEMA.clone()
}

/// A list column of primitives from one flat value vector per row.
fn primitive_list<T, V>(rows: &[ChainRow], values: impl Fn(&ChainRow) -> &[V]) -> ArrayRef
where
    T: ArrowPrimitiveType<Native = V>,
    V: Copy,
{
    let lengths = rows.iter().map(|r| values(r).len());
    let offsets = OffsetBuffer::from_lengths(lengths);
    let flat: Vec<V> = rows
        .iter()
        .flat_map(|r| values(r).iter().copied())
        .collect();
    let item = Arc::new(Field::new("item", T::DATA_TYPE, false));
    Arc::new(ListArray::new(
        item,
        offsets,
        Arc::new(PrimitiveArray::<T>::from_iter_values(flat)),
        None,
    ))
}

fn string_list(rows: &[ChainRow], values: impl Fn(&ChainRow) -> &[String]) -> ArrayRef {
    let offsets = OffsetBuffer::from_lengths(rows.iter().map(|r| values(r).len()));
    let flat = StringArray::from_iter_values(rows.iter().flat_map(|r| values(r).iter()));
    let item = Arc::new(Field::new("item", DataType::Utf8, false));
    Arc::new(ListArray::new(item, offsets, Arc::new(flat), None))
}

/// Converts rows to one record batch of [`chain_schema`].
pub fn rows_to_batch(rows: &[ChainRow]) -> Result<RecordBatch, IngestError> {
    let strings = |f: fn(&ChainRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let u32s = |f: fn(&ChainRow) -> u32| -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        strings(|r| &r.source_key),
        strings(|r| &r.record.chain_id),
        strings(|r| &r.record.sequence),
        u32s(|r| r.record.seq_length),
        primitive_list::<Int8Type, _>(rows, |r| &r.record.aatype),
        primitive_list::<Int32Type, _>(rows, |r| &r.record.residue_index),
        primitive_list::<Int8Type, _>(rows, |r| &r.record.between_segment_residues),
        primitive_list::<Float32Type, _>(rows, |r| &r.record.all_atom_positions),
        primitive_list::<UInt8Type, _>(rows, |r| &r.record.all_atom_mask),
        Arc::new(Float32Array::from_iter_values(
            rows.iter().map(|r| r.record.resolution),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.record.release_date.as_deref()),
        )),
        strings(|r| &r.record.structure_method),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.record.is_distillation)),
        )),
        u32s(|r| r.record.num_alignments),
        Arc::new(BinaryArray::from_iter_values(
            rows.iter().map(|r| r.record.msa.as_slice()),
        )),
        Arc::new(BinaryArray::from_iter_values(
            rows.iter().map(|r| le_bytes(&r.record.deletion_matrix)),
        )),
        string_list(rows, |r| &r.record.msa_species_ids),
        u32s(|r| r.record.templates.num_templates),
        primitive_list::<Int8Type, _>(rows, |r| &r.record.templates.aatype),
        primitive_list::<Float32Type, _>(rows, |r| &r.record.templates.all_atom_positions),
        primitive_list::<UInt8Type, _>(rows, |r| &r.record.templates.all_atom_mask),
        primitive_list::<Float32Type, _>(rows, |r| &r.record.templates.sum_probs),
        string_list(rows, |r| &r.record.templates.domain_names),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.cluster_id),
        )),
        u32s(|r| r.cluster_size),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.source_checksum),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(ChainRow::features_checksum),
        )),
    ];
    RecordBatch::try_new(chain_schema(), columns).map_err(|e| IngestError::Schema {
        chain: rows
            .first()
            .map_or_else(String::new, |r| r.record.chain_id.clone()),
        reason: format!("cannot build the record batch: {e}"),
    })
}

/// Little-endian u16 pairs back to numbers.
fn u16s(bytes: &[u8], chain: &str) -> Result<Vec<u16>, IngestError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(IngestError::Schema {
            chain: chain.to_string(),
            reason: format!(
                "deletion_matrix has {} bytes, expected an even number (u16 pairs)",
                bytes.len()
            ),
        });
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect())
}

/// Reads the rows of a batch of [`chain_schema`] back (checking each record's invariants).
pub fn batch_to_rows(batch: &RecordBatch) -> Result<Vec<ChainRow>, IngestError> {
    let column = |name: &str| -> Result<&ArrayRef, IngestError> {
        batch
            .column_by_name(name)
            .ok_or_else(|| IngestError::Schema {
                chain: name.to_string(),
                reason: "column missing from the batch".to_string(),
            })
    };
    let wrong = |name: &str| IngestError::Schema {
        chain: name.to_string(),
        reason: "column has an unexpected type".to_string(),
    };
    let strings = |name: &str| -> Result<&StringArray, IngestError> {
        column(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| wrong(name))
    };
    let primitive = |name: &str| -> Result<ArrayRef, IngestError> { Ok(column(name)?.clone()) };
    let lists = |name: &str| -> Result<&ListArray, IngestError> {
        column(name)?
            .as_list_opt::<i32>()
            .ok_or_else(|| wrong(name))
    };
    fn values<T: ArrowPrimitiveType>(
        list: &ListArray,
        row: usize,
        name: &str,
    ) -> Result<Vec<T::Native>, IngestError> {
        let inner = list.value(row);
        let array = inner
            .as_primitive_opt::<T>()
            .ok_or_else(|| IngestError::Schema {
                chain: name.to_string(),
                reason: "list items have an unexpected type".to_string(),
            })?;
        Ok(array.values().to_vec())
    }
    fn texts(list: &ListArray, row: usize, name: &str) -> Result<Vec<String>, IngestError> {
        let inner = list.value(row);
        let array = inner
            .as_string_opt::<i32>()
            .ok_or_else(|| IngestError::Schema {
                chain: name.to_string(),
                reason: "list items are not strings".to_string(),
            })?;
        Ok(array.iter().map(|s| s.unwrap_or("").to_string()).collect())
    }
    let u32_col = |name: &str| -> Result<UInt32Array, IngestError> {
        Ok(primitive(name)?
            .as_primitive_opt::<arrow::datatypes::UInt32Type>()
            .ok_or_else(|| wrong(name))?
            .clone())
    };
    let (source, chain, sequence) = (
        strings(SOURCE_KEY_COLUMN)?,
        strings("chain_id")?,
        strings("sequence")?,
    );
    let seq_length = u32_col(LENGTH_COLUMN)?;
    let num_alignments = u32_col("num_alignments")?;
    let num_templates = u32_col("num_templates")?;
    let cluster_size = u32_col("cluster_size")?;
    let resolution = primitive("resolution")?;
    let resolution = resolution
        .as_primitive_opt::<Float32Type>()
        .ok_or_else(|| wrong("resolution"))?;
    let release = strings("release_date")?;
    let method = strings("structure_method")?;
    let distillation = column("is_distillation")?
        .as_boolean_opt()
        .ok_or_else(|| wrong("is_distillation"))?;
    let cluster_id = primitive("cluster_id")?;
    let cluster_id = cluster_id
        .as_primitive_opt::<arrow::datatypes::Int64Type>()
        .ok_or_else(|| wrong("cluster_id"))?;
    let source_checksum = primitive("source_checksum")?;
    let source_checksum = source_checksum
        .as_primitive_opt::<arrow::datatypes::UInt64Type>()
        .ok_or_else(|| wrong("source_checksum"))?;
    let binary = |name: &str| -> Result<&BinaryArray, IngestError> {
        column(name)?
            .as_binary_opt::<i32>()
            .ok_or_else(|| wrong(name))
    };
    let msa = binary("msa")?;
    let deletion_matrix = binary("deletion_matrix")?;
    let names = [
        "aatype",
        "residue_index",
        "between_segment_residues",
        "all_atom_positions",
        "all_atom_mask",
        "msa_species_ids",
        "template_aatype",
        "template_all_atom_positions",
        "template_all_atom_mask",
        "template_sum_probs",
        "template_domain_names",
    ];
    let l: Vec<&ListArray> = names.iter().map(|n| lists(n)).collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let record = ChainRecord {
            chain_id: chain.value(i).to_string(),
            sequence: sequence.value(i).to_string(),
            aatype: values::<Int8Type>(l[0], i, names[0])?,
            residue_index: values::<Int32Type>(l[1], i, names[1])?,
            seq_length: seq_length.value(i),
            between_segment_residues: values::<Int8Type>(l[2], i, names[2])?,
            all_atom_positions: values::<Float32Type>(l[3], i, names[3])?,
            all_atom_mask: values::<UInt8Type>(l[4], i, names[4])?,
            resolution: resolution.value(i),
            release_date: release.is_valid(i).then(|| release.value(i).to_string()),
            structure_method: method.value(i).to_string(),
            is_distillation: distillation.value(i),
            msa: msa.value(i).to_vec(),
            deletion_matrix: u16s(deletion_matrix.value(i), chain.value(i))?,
            num_alignments: num_alignments.value(i),
            msa_species_ids: texts(l[5], i, names[5])?,
            templates: TemplateFeatures {
                num_templates: num_templates.value(i),
                aatype: values::<Int8Type>(l[6], i, names[6])?,
                all_atom_positions: values::<Float32Type>(l[7], i, names[7])?,
                all_atom_mask: values::<UInt8Type>(l[8], i, names[8])?,
                sum_probs: values::<Float32Type>(l[9], i, names[9])?,
                domain_names: texts(l[10], i, names[10])?,
            },
        };
        record.validate().map_err(|e| IngestError::Schema {
            chain: record.chain_id.clone(),
            reason: e.to_string(),
        })?;
        out.push(ChainRow {
            source_key: source.value(i).to_string(),
            record,
            cluster_id: cluster_id.value(i),
            cluster_size: cluster_size.value(i),
            source_checksum: source_checksum.value(i),
        });
    }
    Ok(out)
}
