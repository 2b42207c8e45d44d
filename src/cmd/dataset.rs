//! `scalefold inspect` and `scalefold verify`: look at a dataset on any object store.

use anyhow::Context;
use clap::Args;
use scalefold_storage::Dataset;

/// Arguments of `scalefold inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// Dataset URL or path (local path, file://, s3://, gs://, az://).
    pub dataset: String,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// List every shard in the human summary.
    #[arg(long)]
    pub shards: bool,
}

/// Arguments of `scalefold verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// Dataset URL or path.
    pub dataset: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A tokio runtime for a command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs `scalefold inspect`.
pub fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let dataset = runtime()?.block_on(Dataset::open(&args.dataset))?;
    if args.json {
        println!("{}", serde_json::to_string(&inspect_json(&dataset))?);
    } else {
        print!("{}", summary(&dataset, args.shards));
    }
    Ok(())
}

/// The JSON form of `inspect`: the manifest's facts plus totals.
fn inspect_json(dataset: &Dataset) -> serde_json::Value {
    let m = dataset.manifest();
    let stats = m.length_stats();
    serde_json::json!({
        "url": dataset.url(),
        "format_version": m.format_version,
        "schema_version": m.schema_version,
        "shards": m.shards.len(),
        "rows": m.total_rows(),
        "bytes": m.total_bytes(),
        "row_groups": m.shards.iter().map(|s| s.row_group_rows.len()).sum::<usize>(),
        "source_keys": m.shards.iter().map(|s| s.source_keys.len()).sum::<usize>(),
        "length_column": m.length_column,
        "length_stats": stats.map(|s| serde_json::json!({
            "min": s.min, "max": s.max, "mean": s.mean(), "count": s.count
        })),
        "metadata": m.metadata,
        "schema": m.schema.fields().iter().map(|f| serde_json::json!({
            "name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()
        })).collect::<Vec<_>>(),
        "shard_list": m.shards.iter().map(|s| serde_json::json!({
            "name": s.name, "rows": s.rows, "bytes": s.bytes, "checksum": s.checksum,
            "row_groups": s.row_group_rows.len(),
        })).collect::<Vec<_>>(),
    })
}

/// The human summary of a dataset.
pub fn summary(dataset: &Dataset, list_shards: bool) -> String {
    use std::fmt::Write;
    let m = dataset.manifest();
    let mut out = String::new();
    let _ = writeln!(out, "dataset      {}", dataset.url());
    let _ = writeln!(
        out,
        "shards       {} ({} row groups)",
        m.shards.len(),
        m.shards
            .iter()
            .map(|s| s.row_group_rows.len())
            .sum::<usize>()
    );
    let _ = writeln!(out, "rows         {}", m.total_rows());
    let _ = writeln!(out, "bytes        {}", human_bytes(m.total_bytes()));
    let _ = writeln!(
        out,
        "versions     layout {}, schema {}",
        m.format_version, m.schema_version
    );
    if let (Some(column), Some(s)) = (&m.length_column, m.length_stats()) {
        let _ = writeln!(
            out,
            "{column:<12} min {} / mean {:.1} / max {}",
            s.min,
            s.mean(),
            s.max
        );
    }
    for (k, v) in &m.metadata {
        let _ = writeln!(out, "metadata     {k} = {v}");
    }
    let _ = writeln!(out, "schema");
    for f in m.schema.fields() {
        let _ = writeln!(out, "  {:<28} {}", f.name(), f.data_type());
    }
    if list_shards {
        let _ = writeln!(out, "shard list");
        for s in &m.shards {
            let _ = writeln!(
                out,
                "  {}  {} rows  {}  {} row groups  {}",
                s.name,
                s.rows,
                human_bytes(s.bytes),
                s.row_group_rows.len(),
                s.checksum
            );
        }
    }
    out
}

/// Bytes as a short human-readable size.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Runs `scalefold verify`: non-zero exit, with the list of bad shards, on any failure.
pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let report = runtime()?.block_on(async {
        let dataset = Dataset::open(&args.dataset).await?;
        anyhow::Ok(dataset.verify().await)
    })?;
    let bad = report.bad_shards();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for shard in &bad {
            println!(
                "BAD  {}: {}",
                shard.name,
                shard.error.as_deref().unwrap_or_default()
            );
        }
        println!(
            "{} of {} shards verified",
            report.shards.len() - bad.len(),
            report.shards.len()
        );
    }
    if bad.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} shards failed verification",
            bad.len(),
            report.shards.len()
        )
    }
}
