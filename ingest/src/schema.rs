//! The Arrow schema of one dataset row (one protein chain) and the conversions between
//! [`ChainRecord`]s and Arrow record batches.
//!
//! Small per-residue arrays are flat lists of primitives (row-major, the logical shape in
//! each column's doc). The big arrays are binary values, one per row, little-endian
//! (`numpy.frombuffer` reads them): Parquet encodes a binary value with no per-element
//! work, where a list pays repetition levels and a widening to 32 bits per element.
//! Since schema version 2 they are also stored without their zeros:
//!
//! - `all_atom_mask`, `template_all_atom_mask`: one byte (0 or 1) per atom;
//! - `all_atom_positions_masked`, `template_all_atom_positions_masked`: the `[x, y, z]`
//!   f32 triples of the atoms whose mask is 1, in atom order (the others are 0.0 in a
//!   record built by ingest). A row whose masked-out positions are not all zero bits
//!   stores every atom's triple instead; the two forms are told apart by length (they
//!   coincide when every atom is present), so any record round-trips bit for bit;
//! - `deletion_matrix_sparse`: the non-zero deletion counts (≈ 98 % of a real MSA's are
//!   zero) as 6-byte pairs (u32 index into the row-major `[m][n]` matrix, ascending; u16
//!   count).
//!
//! [`batch_to_rows`] expands them back to the dense [`ChainRecord`] arrays, so the
//! features a loader computes from a row are identical to the record ingest built. The
//! schema carries [`SCHEMA_VERSION`] and the residue-constant and residue-name table
//! versions in its key-value metadata.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryViewArray, BooleanArray, Float32Array, Int64Array,
    ListArray, PrimitiveArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float32Type, Int8Type, Int32Type, Schema, SchemaRef,
};
use scalefold_featurize::ChainRecord;
use scalefold_featurize::residue_constants::RESIDUE_CONSTANTS_VERSION;
use scalefold_featurize::templates::TemplateFeatures;

use crate::job::IngestError;
use crate::residue_names::RESIDUE_NAME_TABLE_VERSION;

/// Version of this schema; bump with any change of columns or their meaning.
///
/// 1: lists of primitives for every array, dense binary MSA and deletion matrix.
/// 2: atom masks as binary, positions of masked atoms only, sparse deletion matrix
///    (same information; the module doc has the layouts).
pub const SCHEMA_VERSION: u32 = 2;

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
            // [n][37] mask bytes; f32 triples of the masked atoms (module doc)
            Field::new("all_atom_positions_masked", DataType::Binary, false),
            Field::new("all_atom_mask", DataType::Binary, false),
            Field::new("resolution", DataType::Float32, false),
            Field::new("release_date", DataType::Utf8, true),
            Field::new("structure_method", DataType::Utf8, false),
            Field::new("is_distillation", DataType::Boolean, false),
            Field::new("num_alignments", DataType::UInt32, false),
            // [m][n]: MSA ids as bytes, and the non-zero deletions as (u32 index, u16
            // count) pairs (binary values: one value per row, nothing per element).
            Field::new("msa", DataType::Binary, false),
            Field::new("deletion_matrix_sparse", DataType::Binary, false),
            // [m]
            list_of("msa_species_ids", DataType::Utf8),
            Field::new("num_templates", DataType::UInt32, false),
            // [t][n]; masked f32 triples and [t][n][37] mask bytes (as above); [t], [t]
            list_of("template_aatype", DataType::Int8),
            Field::new(
                "template_all_atom_positions_masked",
                DataType::Binary,
                false,
            ),
            Field::new("template_all_atom_mask", DataType::Binary, false),
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

/// The array columns (every list and binary column): written without Parquet min/max
/// statistics, which nothing filters on and which cost encoding time (the scalar columns
/// keep theirs).
pub fn array_columns() -> Vec<String> {
    chain_schema()
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::List(_) | DataType::Binary))
        .map(|f| f.name().clone())
        .collect()
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

/// A binary column with one value per row, written by `write` straight into the array's
/// value buffer (no allocation per row).
/// Fails when the values pass 2 GiB (32-bit offsets): one source's chains that large in
/// one column are rejected with the column named, never truncated.
fn binary_column(
    rows: &[ChainRow],
    column: &str,
    write: impl Fn(&ChainRow, &mut Vec<u8>),
) -> Result<ArrayRef, IngestError> {
    let mut values = Vec::new();
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0i32);
    for row in rows {
        write(row, &mut values);
        let end = i32::try_from(values.len()).map_err(|_| IngestError::Schema {
            chain: row.record.chain_id.clone(),
            reason: format!(
                "column {column} holds {} bytes for this source's chains, more than a record batch's 2 GiB",
                values.len()
            ),
        })?;
        offsets.push(end);
    }
    Ok(Arc::new(BinaryArray::new(
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Buffer::from_vec(values),
        None,
    )))
}

/// Appends the little-endian `[x, y, z]` of every atom whose mask is non-zero, or, when a
/// masked-out atom has a position other than +0.0, every atom's (the module doc's layout).
fn masked_positions(positions: &[f32], mask: &[u8], out: &mut Vec<u8>) {
    if positions.len() != mask.len() * 3 {
        // Not a valid record (its reader's validation names the field): stored as it is.
        out.extend_from_slice(&le_bytes(positions));
        return;
    }
    let start = out.len();
    let present = mask.iter().filter(|&&m| m != 0).count();
    out.reserve(present * 12);
    for (xyz, &m) in positions.chunks_exact(3).zip(mask) {
        if m != 0 {
            out.extend_from_slice(&le_bytes(xyz));
        } else if xyz.iter().any(|v| v.to_bits() != 0) {
            out.truncate(start);
            out.extend_from_slice(&le_bytes(positions));
            return;
        }
    }
}

/// Appends the non-zero entries of a row-major deletion matrix as (u32 index, u16 count)
/// little-endian pairs.
fn sparse_deletions(deletions: &[u16], out: &mut Vec<u8>) {
    // Almost every block of a real MSA is all zeros: blocks of a fixed size let the zero
    // test compile to a few vector ORs.
    const BLOCK: usize = 32;
    let mut push_nonzero = |start: usize, values: &[u16]| {
        for (k, &v) in values.iter().enumerate() {
            if v != 0 {
                out.extend_from_slice(&((start + k) as u32).to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    };
    let blocks = deletions.chunks_exact(BLOCK);
    let tail = blocks.remainder();
    for (block, values) in blocks.enumerate() {
        if values.iter().fold(0, |acc, &v| acc | v) != 0 {
            push_nonzero(block * BLOCK, values);
        }
    }
    push_nonzero(deletions.len() - tail.len(), tail);
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
        binary_column(rows, "all_atom_positions_masked", |r, out| {
            masked_positions(&r.record.all_atom_positions, &r.record.all_atom_mask, out)
        })?,
        binary_column(rows, "all_atom_mask", |r, out| {
            out.extend_from_slice(&r.record.all_atom_mask)
        })?,
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
        binary_column(rows, "msa", |r, out| out.extend_from_slice(&r.record.msa))?,
        binary_column(rows, "deletion_matrix_sparse", |r, out| {
            sparse_deletions(&r.record.deletion_matrix, out)
        })?,
        string_list(rows, |r| &r.record.msa_species_ids),
        u32s(|r| r.record.templates.num_templates),
        primitive_list::<Int8Type, _>(rows, |r| &r.record.templates.aatype),
        binary_column(rows, "template_all_atom_positions_masked", |r, out| {
            let t = &r.record.templates;
            masked_positions(&t.all_atom_positions, &t.all_atom_mask, out)
        })?,
        binary_column(rows, "template_all_atom_mask", |r, out| {
            out.extend_from_slice(&r.record.templates.all_atom_mask)
        })?,
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

fn schema_error(chain: &str, reason: String) -> IngestError {
    IngestError::Schema {
        chain: chain.to_string(),
        reason,
    }
}

/// `deletion_matrix_sparse` back to the dense `[m][n]` matrix of `cells` values.
fn dense_deletions(bytes: &[u8], cells: usize, chain: &str) -> Result<Vec<u16>, IngestError> {
    if !bytes.len().is_multiple_of(6) {
        return Err(schema_error(
            chain,
            format!(
                "deletion_matrix_sparse has {} bytes, expected (u32 index, u16 count) pairs of 6 bytes",
                bytes.len()
            ),
        ));
    }
    let mut dense = vec![0u16; cells];
    let mut next = 0usize;
    for pair in bytes.chunks_exact(6) {
        let index = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]) as usize;
        if index < next || index >= cells {
            return Err(schema_error(
                chain,
                format!(
                    "deletion_matrix_sparse index {index} is out of order or outside the {cells} cells of the MSA"
                ),
            ));
        }
        dense[index] = u16::from_le_bytes([pair[4], pair[5]]);
        next = index + 1;
    }
    Ok(dense)
}

/// Little-endian f32 values of a binary value.
fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A `*_positions_masked` value back to dense `[atoms][3]` positions, given the mask of
/// the same atoms.
fn dense_positions(
    bytes: &[u8],
    mask: &[u8],
    column: &str,
    chain: &str,
) -> Result<Vec<f32>, IngestError> {
    let atoms = mask.len();
    if bytes.len() == atoms * 12 {
        return Ok(f32s(bytes).collect());
    }
    let present = mask.iter().filter(|&&m| m != 0).count();
    if bytes.len() != present * 12 {
        return Err(schema_error(
            chain,
            format!(
                "{column} has {} bytes, expected 12 per masked atom ({present}) or per atom ({atoms})",
                bytes.len()
            ),
        ));
    }
    let mut dense = vec![0f32; atoms * 3];
    let mut values = f32s(bytes);
    for (xyz, _) in dense
        .chunks_exact_mut(3)
        .zip(mask)
        .filter(|(_, m)| **m != 0)
    {
        xyz.iter_mut()
            .for_each(|v| *v = values.next().unwrap_or_default());
    }
    Ok(dense)
}

/// A binary column as stored (`Binary`) or as read in the storage crate's view layout
/// (`BinaryView`, values left in the decompressed pages): both give the same bytes.
enum BinaryColumn<'a> {
    Offsets(&'a BinaryArray),
    Views(&'a BinaryViewArray),
}

impl BinaryColumn<'_> {
    fn value(&self, row: usize) -> &[u8] {
        match self {
            BinaryColumn::Offsets(array) => array.value(row),
            BinaryColumn::Views(array) => array.value(row),
        }
    }
}

/// Reads the rows of a batch of [`chain_schema`] back (checking each record's invariants).
/// Binary columns may be `Binary` or `BinaryView` (the storage crate's
/// `BinaryLayout::Views`); the rows are the same.
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
    let binary = |name: &str| -> Result<BinaryColumn<'_>, IngestError> {
        let array = column(name)?;
        if let Some(plain) = array.as_binary_opt::<i32>() {
            Ok(BinaryColumn::Offsets(plain))
        } else {
            array
                .as_binary_view_opt()
                .map(BinaryColumn::Views)
                .ok_or_else(|| wrong(name))
        }
    };
    let msa = binary("msa")?;
    let deletion_matrix = binary("deletion_matrix_sparse")?;
    let positions = binary("all_atom_positions_masked")?;
    let mask = binary("all_atom_mask")?;
    let template_positions = binary("template_all_atom_positions_masked")?;
    let template_mask = binary("template_all_atom_mask")?;
    let names = [
        "aatype",
        "residue_index",
        "between_segment_residues",
        "msa_species_ids",
        "template_aatype",
        "template_sum_probs",
        "template_domain_names",
    ];
    let l: Vec<&ListArray> = names.iter().map(|n| lists(n)).collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let id = chain.value(i);
        // The MSA holds one byte per cell: its length bounds the dense deletion matrix
        // (never allocate from the row's counts alone: a corrupt row could ask for exabytes).
        let cells = num_alignments.value(i) as usize * seq_length.value(i) as usize;
        if msa.value(i).len() != cells {
            return Err(schema_error(
                id,
                format!(
                    "msa has {} bytes, expected num_alignments × seq_length = {cells}",
                    msa.value(i).len()
                ),
            ));
        }
        let record = ChainRecord {
            chain_id: id.to_string(),
            sequence: sequence.value(i).to_string(),
            aatype: values::<Int8Type>(l[0], i, names[0])?,
            residue_index: values::<Int32Type>(l[1], i, names[1])?,
            seq_length: seq_length.value(i),
            between_segment_residues: values::<Int8Type>(l[2], i, names[2])?,
            all_atom_positions: dense_positions(
                positions.value(i),
                mask.value(i),
                "all_atom_positions_masked",
                id,
            )?,
            all_atom_mask: mask.value(i).to_vec(),
            resolution: resolution.value(i),
            release_date: release.is_valid(i).then(|| release.value(i).to_string()),
            structure_method: method.value(i).to_string(),
            is_distillation: distillation.value(i),
            msa: msa.value(i).to_vec(),
            deletion_matrix: dense_deletions(deletion_matrix.value(i), cells, id)?,
            num_alignments: num_alignments.value(i),
            msa_species_ids: texts(l[3], i, names[3])?,
            templates: TemplateFeatures {
                num_templates: num_templates.value(i),
                aatype: values::<Int8Type>(l[4], i, names[4])?,
                all_atom_positions: dense_positions(
                    template_positions.value(i),
                    template_mask.value(i),
                    "template_all_atom_positions_masked",
                    id,
                )?,
                all_atom_mask: template_mask.value(i).to_vec(),
                sum_probs: values::<Float32Type>(l[5], i, names[5])?,
                domain_names: texts(l[6], i, names[6])?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_positions_store_only_masked_atoms_and_expand_back() {
        let mask = [1u8, 0, 1, 0];
        let positions = [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, -4.5, 5.0, 6.0, 0.0, 0.0, 0.0];
        let mut stored = Vec::new();
        masked_positions(&positions, &mask, &mut stored);
        assert_eq!(stored.len(), 2 * 12);
        let back = dense_positions(&stored, &mask, "p", "x_A").unwrap();
        assert_eq!(back, positions);
    }

    #[test]
    fn masked_positions_fall_back_to_every_atom_when_a_masked_out_one_is_not_zero() {
        let mask = [1u8, 0];
        for odd in [7.0f32, -0.0] {
            let positions = [1.0, 2.0, 3.0, 0.0, odd, 0.0];
            let mut stored = vec![9u8];
            masked_positions(&positions, &mask, &mut stored);
            assert_eq!(stored.len(), 1 + 6 * 4);
            let back = dense_positions(&stored[1..], &mask, "p", "x_A").unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&back), bits(&positions));
        }
    }

    #[test]
    fn masked_positions_of_the_wrong_length_are_an_error_naming_the_column() {
        let err = dense_positions(&[0u8; 12 * 3], &[1, 0, 1, 0], "template_p", "x_A")
            .unwrap_err()
            .to_string();
        assert!(err.contains("template_p") && err.contains("x_A"), "{err}");
    }

    #[test]
    fn sparse_deletions_keep_nonzero_cells_and_expand_back() {
        let mut dense = vec![0u16; 37];
        dense[0] = 1;
        dense[9] = u16::MAX;
        dense[36] = 2;
        let mut stored = Vec::new();
        sparse_deletions(&dense, &mut stored);
        assert_eq!(stored.len(), 3 * 6);
        assert_eq!(dense_deletions(&stored, 37, "x_A").unwrap(), dense);
    }

    proptest::proptest! {
        #[test]
        fn sparse_deletions_round_trip(cells in proptest::collection::vec(
            proptest::prop_oneof![8 => proptest::strategy::Just(0u16), 1 => proptest::num::u16::ANY],
            0..300,
        )) {
            let mut stored = Vec::new();
            sparse_deletions(&cells, &mut stored);
            let nonzero = cells.iter().filter(|&&v| v != 0).count();
            proptest::prop_assert_eq!(stored.len(), nonzero * 6);
            proptest::prop_assert_eq!(dense_deletions(&stored, cells.len(), "x_A").unwrap(), cells);
        }
    }

    #[test]
    fn corrupt_sparse_deletions_are_errors() {
        let pair = |i: u32, v: u16| [i.to_le_bytes().as_slice(), &v.to_le_bytes()].concat();
        let unordered = [pair(5, 1), pair(3, 1)].concat();
        let outside = pair(10, 1);
        for (bytes, expected) in [
            (unordered, "out of order"),
            (outside, "outside the 10 cells"),
            (vec![0u8; 7], "6 bytes"),
        ] {
            let err = dense_deletions(&bytes, 10, "x_A").unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("x_A"), "{err}");
        }
    }
}
