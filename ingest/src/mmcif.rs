//! mmCIF → [`Structure`], following the rules of the AlphaFold/OpenFold reference.
//!
//! - Protein chains are the `_struct_asym` chains of entities from `_entity_poly_seq` of
//!   which some residue's `_chem_comp.type` contains `peptide`; chains are keyed by their
//!   author chain id (`auth_asym_id`).
//! - The sequence is the full `_entity_poly_seq` in one-letter code
//!   ([`crate::residue_names`]); residues are placed by `label_seq_id`, unresolved ones
//!   keep an all-zero mask.
//! - Only the first model is read. Atoms: a name seen twice keeps its first record;
//!   among alternate locations the highest occupancy wins, the first on a tie; MSE's SE
//!   goes to the SD slot; arginine NH1/NH2 are swapped when NH2 is closer to CD.
//!   Hydrogens have no atom37 slot and drop out.
//! - Header: `_exptl.method` (lowercase, joined by `,`), the earliest
//!   `_pdbx_audit_revision_history.revision_date` (none when absent), the resolution from
//!   `_refine.ls_d_res_high`, else `_em_3d_reconstruction.resolution`, else
//!   `_reflns.d_resolution_high`, else 0.0.
//!
//! Heterogeneity (two residues listed for one `_entity_poly_seq.num`) is resolved by
//! [`Heterogeneity`]; the reference keeps every listed residue, which shifts the
//! sequence against the coordinates, so the default takes the first choice.

use std::collections::HashMap;
use std::path::Path;

use scalefold_featurize::inputs::{ChainStructure, Structure, StructureHeader};
use scalefold_featurize::residue_constants::ATOM_TYPE_NUM;

use crate::cif::{self, Category, Column, DataBlock, Value};
use crate::error::{ParseError, Result, excerpt};
use crate::input::{as_utf8, last_line, read_file};
use crate::number::{parse_f32, parse_i32};
use crate::residue_names::{RESIDUE_NAME_TABLE_VERSION, one_letter_code};
use crate::residues::{AtomRecord, ResidueAtoms};

/// How to read an `_entity_poly_seq` that lists several residues at one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Heterogeneity {
    /// Keep the first residue listed at each position (sequence and coordinates agree).
    #[default]
    FirstChoice,
    /// Keep every listed residue, as the AlphaFold reference does (the sequence then has
    /// more entries than positions, and later residues shift against their coordinates).
    EveryEntry,
}

/// Options of the mmCIF reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MmcifOptions {
    /// Treatment of sequence heterogeneity.
    pub heterogeneity: Heterogeneity,
}

/// Reads an mmCIF file (`.cif` or gzip-compressed `.cif.gz`).
pub fn read_mmcif(path: &Path, options: &MmcifOptions) -> Result<Structure> {
    let (name, bytes) = read_file(path)?;
    parse_mmcif(&name, &bytes, options)
}

/// The entry id of a file name: its stem without `.cif`/`.gz`, lowercase.
pub fn entry_id_from_file_name(file: &str) -> String {
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    let mut stem = base;
    for suffix in [".gz", ".cif", ".mmcif", ".pdb", ".ent"] {
        if let Some(s) = stem.strip_suffix(suffix) {
            stem = s;
        }
    }
    stem.to_ascii_lowercase()
}

/// Parses mmCIF bytes (already decompressed). `file` names the input in errors and gives
/// the entry id.
pub fn parse_mmcif(file: &str, bytes: &[u8], options: &MmcifOptions) -> Result<Structure> {
    let text = as_utf8(file, bytes)?;
    let document = cif::parse_selected(file, text, wanted_items)?;
    let block = &document.blocks[0];
    let ctx = Context {
        file,
        end_line: last_line(bytes),
    };
    let header = read_header(&ctx, block)?;
    let chains = read_chains(&ctx, block, options)?;
    Ok(Structure {
        id: entry_id_from_file_name(file),
        header,
        chains,
        residue_table_version: RESIDUE_NAME_TABLE_VERSION,
    })
}

/// The categories and items this reader uses; [`parse_mmcif`] keeps only these (the rest
/// of the file is still checked for syntax).
const WANTED: &[(&str, &[&str])] = &[
    ("_exptl", &["method"]),
    ("_pdbx_audit_revision_history", &["revision_date"]),
    ("_refine", &["ls_d_res_high"]),
    ("_em_3d_reconstruction", &["resolution"]),
    ("_reflns", &["d_resolution_high"]),
    ("_entity_poly_seq", &["entity_id", "num", "mon_id"]),
    ("_chem_comp", &["id", "type"]),
    ("_struct_asym", &["id", "entity_id"]),
    ("_atom_site", ATOM_SITE_ITEMS),
];

/// The `_atom_site` items [`AtomSiteColumns`] reads.
const ATOM_SITE_ITEMS: &[&str] = &[
    "group_PDB",
    "label_atom_id",
    "label_alt_id",
    "label_comp_id",
    "label_asym_id",
    "label_seq_id",
    "pdbx_PDB_ins_code",
    "Cartn_x",
    "Cartn_y",
    "Cartn_z",
    "occupancy",
    "auth_seq_id",
    "auth_asym_id",
    "pdbx_PDB_model_num",
];

/// What the parse keeps of a category: the items in [`WANTED`], nothing of the others.
fn wanted_items(category: &str) -> cif::Keep<'static> {
    let items = WANTED
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(category))
        .map_or(&[][..], |(_, items)| *items);
    cif::Keep::Items(items)
}

/// What error messages need to know about the input.
struct Context<'f> {
    file: &'f str,
    end_line: usize,
}

impl Context<'_> {
    fn missing(&self, what: String) -> ParseError {
        ParseError::Missing {
            file: self.file.to_string(),
            line: self.end_line,
            what,
        }
    }

    fn invalid(&self, value: Value<'_>, field: String, expected: &str) -> ParseError {
        ParseError::InvalidValue {
            file: self.file.to_string(),
            line: value.line as usize,
            field,
            expected: expected.to_string(),
            found: excerpt(value.text.as_bytes()),
        }
    }

    fn category<'b, 'a>(&self, block: &'b DataBlock<'a>, name: &str) -> Result<&'b Category<'a>> {
        block
            .category(name)
            .ok_or_else(|| self.missing(format!("category {name}")))
    }

    fn column<'c, 'a>(&self, category: &'c Category<'a>, item: &str) -> Result<Column<'c, 'a>> {
        category
            .column(item)
            .ok_or_else(|| self.missing(format!("item {}.{item}", category.name)))
    }

    fn int(&self, category: &Category<'_>, item: &str, value: Value<'_>) -> Result<i32> {
        value
            .as_str()
            .and_then(parse_i32)
            .ok_or_else(|| self.invalid(value, format!("{}.{item}", category.name), "an integer"))
    }

    fn float(&self, field: &str, value: Value<'_>) -> Result<f32> {
        value
            .as_str()
            .and_then(parse_f32)
            .ok_or_else(|| self.invalid(value, field.to_string(), "a number"))
    }
}

fn read_header(ctx: &Context<'_>, block: &DataBlock<'_>) -> Result<StructureHeader> {
    let structure_method = match block.category("_exptl") {
        Some(exptl) => ctx
            .column(exptl, "method")?
            .iter()
            .map(|v| v.text.to_lowercase())
            .collect::<Vec<_>>()
            .join(","),
        None => String::new(),
    };
    let release_date = block
        .category("_pdbx_audit_revision_history")
        .and_then(|c| c.column("revision_date"))
        .and_then(|dates| dates.iter().filter_map(|v| v.as_str()).min())
        .map(str::to_string);
    let resolution = [
        ("_refine", "ls_d_res_high"),
        ("_em_3d_reconstruction", "resolution"),
        ("_reflns", "d_resolution_high"),
    ]
    .iter()
    .find_map(|(category, item)| {
        block
            .category(category)
            .and_then(|c| c.value(0, item))
            .and_then(|v| v.as_str())
            .and_then(|t| t.trim().parse::<f32>().ok())
    })
    .unwrap_or(0.0);
    Ok(StructureHeader {
        structure_method,
        release_date,
        resolution,
    })
}

/// A polymer entity: its id and residues (`_entity_poly_seq.num`, `mon_id`).
struct Entity<'a> {
    id: &'a str,
    residues: Vec<(i32, &'a str)>,
    /// The highest `num` in `residues` (`i32::MIN` while empty): a larger one is new, so
    /// the usual increasing numbering needs no search for a repeated position.
    highest: i32,
}

/// A protein chain in `label_asym_id` terms while atoms are read.
struct LabelChain<'a> {
    label_id: &'a str,
    entity: usize,
    /// First `_entity_poly_seq.num` of the entity (label_seq_id of sequence index 0).
    start: i32,
    author_id: Option<&'a str>,
    /// Residue (index into the residue table) at each sequence position.
    placed: Vec<Option<usize>>,
}

/// The residue identity the reference keys coordinates by: author chain, hetero flag,
/// author residue number and insertion code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ResidueKey<'a> {
    author_chain: &'a str,
    hetero: Hetero<'a>,
    number: i32,
    insertion_code: &'a str,
}

/// The hetero flag of a residue id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Hetero<'a> {
    Atom,
    Water,
    Het(&'a str),
}

fn read_entities<'a>(
    ctx: &Context<'_>,
    block: &DataBlock<'a>,
    options: &MmcifOptions,
) -> Result<Vec<Entity<'a>>> {
    let poly_seq = ctx.category(block, "_entity_poly_seq")?;
    let entity_ids = ctx.column(poly_seq, "entity_id")?;
    let nums = ctx.column(poly_seq, "num")?;
    let mon_ids = ctx.column(poly_seq, "mon_id")?;
    let mut entities: Vec<Entity<'a>> = Vec::new();
    for row in 0..poly_seq.rows() {
        let (Some(entity_id), Some(num), Some(mon_id)) =
            (entity_ids.get(row), nums.get(row), mon_ids.get(row))
        else {
            continue;
        };
        let num = ctx.int(poly_seq, "num", num)?;
        let index = match entities.iter().rposition(|e| e.id == entity_id.text) {
            Some(i) => i,
            None => {
                entities.push(Entity {
                    id: entity_id.text,
                    residues: Vec::new(),
                    highest: i32::MIN,
                });
                entities.len() - 1
            }
        };
        let entity = &mut entities[index];
        if options.heterogeneity == Heterogeneity::FirstChoice
            && num <= entity.highest
            && entity.residues.iter().any(|&(n, _)| n == num)
        {
            continue;
        }
        entity.highest = entity.highest.max(num);
        entity.residues.push((num, mon_id.text));
    }
    Ok(entities)
}

fn protein_label_chains<'a>(
    ctx: &Context<'_>,
    block: &DataBlock<'a>,
    entities: &[Entity<'a>],
) -> Result<Vec<LabelChain<'a>>> {
    let chem_comp = ctx.category(block, "_chem_comp")?;
    let comp_ids = ctx.column(chem_comp, "id")?;
    let comp_types = ctx.column(chem_comp, "type")?;
    let is_peptide: HashMap<&str, bool> = comp_ids
        .iter()
        .zip(comp_types.iter())
        .map(|(id, t)| (id.text, t.text.contains("peptide")))
        .collect();
    let struct_asym = ctx.category(block, "_struct_asym")?;
    let asym_ids = ctx.column(struct_asym, "id")?;
    let asym_entities = ctx.column(struct_asym, "entity_id")?;
    let mut chains = Vec::new();
    for (index, entity) in entities.iter().enumerate() {
        let peptide = entity
            .residues
            .iter()
            .any(|(_, mon)| is_peptide.get(mon).copied().unwrap_or(false));
        if !peptide {
            continue;
        }
        let start = entity.residues.iter().map(|r| r.0).min().unwrap_or(1);
        for (asym, asym_entity) in asym_ids.iter().zip(asym_entities.iter()) {
            if asym_entity.text == entity.id {
                chains.push(LabelChain {
                    label_id: asym.text,
                    entity: index,
                    start,
                    author_id: None,
                    placed: vec![None; entity.residues.len()],
                });
            }
        }
    }
    Ok(chains)
}

/// The `_atom_site` columns the reader uses.
struct AtomSiteColumns<'c, 'a> {
    group: Column<'c, 'a>,
    atom_name: Column<'c, 'a>,
    alt_id: Option<Column<'c, 'a>>,
    comp_id: Column<'c, 'a>,
    label_asym: Column<'c, 'a>,
    label_seq: Column<'c, 'a>,
    insertion_code: Option<Column<'c, 'a>>,
    x: Column<'c, 'a>,
    y: Column<'c, 'a>,
    z: Column<'c, 'a>,
    occupancy: Option<Column<'c, 'a>>,
    author_seq: Column<'c, 'a>,
    author_asym: Column<'c, 'a>,
    model: Option<Column<'c, 'a>>,
}

impl<'c, 'a> AtomSiteColumns<'c, 'a> {
    fn new(ctx: &Context<'_>, atom_site: &'c Category<'a>) -> Result<Self> {
        let column = |item| ctx.column(atom_site, item);
        Ok(AtomSiteColumns {
            group: column("group_PDB")?,
            atom_name: column("label_atom_id")?,
            alt_id: atom_site.column("label_alt_id"),
            comp_id: column("label_comp_id")?,
            label_asym: column("label_asym_id")?,
            label_seq: column("label_seq_id")?,
            insertion_code: atom_site.column("pdbx_PDB_ins_code"),
            x: column("Cartn_x")?,
            y: column("Cartn_y")?,
            z: column("Cartn_z")?,
            occupancy: atom_site.column("occupancy"),
            author_seq: atom_site
                .column("auth_seq_id")
                .map_or_else(|| column("label_seq_id"), Ok)?,
            author_asym: atom_site
                .column("auth_asym_id")
                .map_or_else(|| column("label_asym_id"), Ok)?,
            model: atom_site.column("pdbx_PDB_model_num"),
        })
    }
}

/// Reads a value that the column invariant guarantees (every row has every item).
fn cell<'a>(column: &Column<'_, 'a>, row: usize) -> Value<'a> {
    column.get(row).unwrap_or(Value {
        text: "",
        line: 0,
        kind: cif::ValueKind::Unknown,
    })
}

fn read_chains(
    ctx: &Context<'_>,
    block: &DataBlock<'_>,
    options: &MmcifOptions,
) -> Result<Vec<ChainStructure>> {
    let entities = read_entities(ctx, block, options)?;
    let mut chains = protein_label_chains(ctx, block, &entities)?;
    let atom_site = ctx.category(block, "_atom_site")?;
    let cols = AtomSiteColumns::new(ctx, atom_site)?;

    let mut residues: Vec<ResidueAtoms<'_>> = Vec::new();
    let mut residue_index: HashMap<ResidueKey<'_>, usize> = HashMap::new();
    let mut last: Option<(ResidueKey<'_>, usize)> = None;
    let mut last_chain: Option<usize> = None;
    let first_model = cols.model.as_ref().and_then(|m| m.get(0)).map(|v| v.text);

    for row in 0..atom_site.rows() {
        if let (Some(model), Some(first)) = (cols.model.as_ref(), first_model)
            && cell(model, row).text != first
        {
            continue;
        }
        let label_asym = cell(&cols.label_asym, row).text;
        let chain_index = match last_chain {
            Some(i) if chains[i].label_id == label_asym => i,
            _ => match chains.iter().position(|c| c.label_id == label_asym) {
                Some(i) => i,
                None => continue,
            },
        };
        last_chain = Some(chain_index);
        let author_chain = cell(&cols.author_asym, row).text;
        let comp_id = cell(&cols.comp_id, row).text;
        let label_seq = ctx.int(atom_site, "label_seq_id", cell(&cols.label_seq, row))?;
        let author_seq = ctx.int(atom_site, "auth_seq_id", cell(&cols.author_seq, row))?;
        let hetero = if cell(&cols.group, row).text == "HETATM" {
            if comp_id == "HOH" || comp_id == "WAT" {
                Hetero::Water
            } else {
                Hetero::Het(comp_id)
            }
        } else {
            Hetero::Atom
        };
        let insertion_code = cols
            .insertion_code
            .as_ref()
            .and_then(|c| cell(c, row).as_str())
            .unwrap_or(" ");
        let key = ResidueKey {
            author_chain,
            hetero,
            number: author_seq,
            insertion_code,
        };
        let residue = match last {
            Some((k, i)) if k == key => i,
            _ => *residue_index.entry(key).or_insert_with(|| {
                residues.push(ResidueAtoms::new());
                residues.len() - 1
            }),
        };
        last = Some((key, residue));

        let chain = &mut chains[chain_index];
        chain.author_id = Some(author_chain);
        let position = label_seq as i64 - chain.start as i64;
        if let Some(slot) = usize::try_from(position)
            .ok()
            .and_then(|p| chain.placed.get_mut(p))
        {
            *slot = Some(residue);
        }

        let atom_name = cell(&cols.atom_name, row).text.as_bytes();
        let alt = cols.alt_id.as_ref().map(|c| cell(c, row));
        let has_altloc = alt.is_some_and(|a| !a.is_null() && !a.text.trim().is_empty());
        let occupancy = match (&cols.occupancy, has_altloc) {
            (Some(c), true) => ctx.float("_atom_site.occupancy", cell(c, row))?,
            _ => 1.0,
        };
        let position = [
            ctx.float("_atom_site.Cartn_x", cell(&cols.x, row))?,
            ctx.float("_atom_site.Cartn_y", cell(&cols.y, row))?,
            ctx.float("_atom_site.Cartn_z", cell(&cols.z, row))?,
        ];
        residues[residue].add(
            comp_id,
            AtomRecord {
                name: atom_name,
                position,
                occupancy,
                has_altloc,
            },
        );
    }

    let mut out: Vec<ChainStructure> = Vec::new();
    for chain in &chains {
        let Some(author_id) = chain.author_id else {
            continue;
        };
        let entity = &entities[chain.entity];
        let n = entity.residues.len();
        let mut structure = ChainStructure {
            chain_id: author_id.to_string(),
            sequence: entity
                .residues
                .iter()
                .map(|(_, mon)| one_letter_code(mon) as char)
                .collect(),
            residue_index: entity.residues.iter().map(|r| r.0).collect(),
            atom_positions: vec![[[0.0; 3]; ATOM_TYPE_NUM]; n],
            atom_mask: vec![[0.0; ATOM_TYPE_NUM]; n],
        };
        for (i, placed) in chain.placed.iter().enumerate() {
            if let Some(r) = placed {
                residues[*r].write_atom37(
                    &mut structure.atom_positions[i],
                    &mut structure.atom_mask[i],
                );
            }
        }
        // Two label chains under one author id: the later one wins, in the first's place.
        match out.iter_mut().find(|c| c.chain_id == structure.chain_id) {
            Some(existing) => *existing = structure,
            None => out.push(structure),
        }
    }
    Ok(out)
}
