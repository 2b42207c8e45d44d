//! Bad inputs become report lines naming the input and the reason; the job carries on
//! and writes everything else. Filters drop exactly the inputs they should.

mod job_common;

use job_common::{corpus_and_config, rows, run, small_corpus};
use scalefold_ingest::job::{Filters, IngestConfig, LineKind};
use scalefold_ingest::synth::{CorpusPlan, SynthConfig, SynthEntry, generate_entry};

fn entries(synth: &SynthConfig) -> Vec<SynthEntry> {
    let plan = CorpusPlan::new(synth).unwrap();
    (0..plan.entry_count())
        .map(|e| generate_entry(&plan, e))
        .collect()
}

#[test]
fn bad_inputs_are_reported_and_the_job_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let synth = SynthConfig {
        gzip_fraction: 0.5,
        ..small_corpus(24, 21)
    };
    let config = corpus_and_config(dir.path(), &synth);
    let corpus = dir.path().join("corpus");
    let all = entries(&synth);
    let total_chains: usize = all.iter().map(|e| e.chains.len()).sum();
    let is_gz = |e: &SynthEntry| e.files[0].path.to_string_lossy().ends_with(".gz");

    // 1. A chain whose a3m belongs to another query (a chain of another length).
    let victim = &all[0].chains[0];
    let other = all
        .iter()
        .flat_map(|e| &e.chains)
        .find(|c| c.sequence.len() != victim.sequence.len())
        .unwrap();
    std::fs::copy(
        corpus
            .join("alignments")
            .join(&other.key)
            .join("a3m/bfd_uniclust_hits.a3m"),
        corpus
            .join("alignments")
            .join(&victim.key)
            .join("a3m/bfd_uniclust_hits.a3m"),
    )
    .unwrap();
    // 2. A chain without its alignment folder.
    let orphan = &all[1].chains[0];
    std::fs::remove_dir_all(corpus.join("alignments").join(&orphan.key)).unwrap();
    // 3. A truncated gzip file.
    let gz = all[2..].iter().find(|e| is_gz(e)).expect("a gzip entry");
    let gz_path = corpus.join(&gz.files[0].path);
    let bytes = std::fs::read(&gz_path).unwrap();
    std::fs::write(&gz_path, &bytes[..bytes.len() / 2]).unwrap();
    // 4. A malformed mmCIF: a coordinate that is not a number.
    let bad = all[2..].iter().find(|e| !is_gz(e)).expect("a plain entry");
    let line_no = break_a_coordinate(&corpus.join(&bad.files[0].path));

    let report = run(&config);
    let failed: Vec<_> = report
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Failed)
        .collect();
    assert_eq!(failed.len(), 4, "{}", report.summary());
    let find = |input: &str| {
        failed
            .iter()
            .find(|l| l.input.ends_with(input))
            .unwrap_or_else(|| panic!("no line for {input}: {}", report.summary()))
    };
    let l = find(&victim.key);
    assert_eq!(l.stage, "alignment");
    assert!(
        l.reason.contains("another query") && l.reason.contains("bfd_uniclust_hits.a3m"),
        "{}",
        l.reason
    );
    let l = find(&orphan.key);
    assert!(l.reason.contains("no alignment folder"), "{}", l.reason);
    let l = find(&gz.files[0].path.file_name().unwrap().to_string_lossy());
    assert_eq!(l.stage, "parse");
    assert!(l.reason.contains("gzip"), "{}", l.reason);
    let l = find(&bad.files[0].path.file_name().unwrap().to_string_lossy());
    assert_eq!(l.stage, "parse");
    assert!(
        l.reason.contains(&format!(":{line_no}:")),
        "line {line_no}: {}",
        l.reason
    );

    let expected = total_chains - 2 - gz.chains.len() - bad.chains.len();
    assert_eq!(rows(&config.out).len(), expected);
    assert_eq!(report.chains_written, expected);
}

/// Makes the x coordinate of atom 5 of a plain mmCIF file `1.2.3`; returns its line.
fn break_a_coordinate(path: &std::path::Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let line_no = text.lines().position(|l| l.starts_with("ATOM 5 ")).unwrap() + 1;
    let broken: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("ATOM 5 ") {
                let mut f: Vec<&str> = l.split(' ').collect();
                f[10] = "1.2.3";
                f.join(" ")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(path, broken.join("\n") + "\n").unwrap();
    line_no
}

#[test]
fn an_unparsable_structure_is_not_parsed_again_for_each_template_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let synth = small_corpus(24, 21);
    // One CPU thread and one fetch at a time: sources are processed in order and no two
    // threads race to parse the same uncached file, so the count below is exact.
    let config = IngestConfig {
        threads: 1,
        io_concurrency: 1,
        ..corpus_and_config(dir.path(), &synth)
    };
    let corpus = dir.path().join("corpus");
    let mut all = entries(&synth);
    all.sort_by(|a, b| a.files[0].path.cmp(&b.files[0].path));
    // Break plain files that only later sources hit as templates: their own source fails
    // first, and every later lookup must take that failure from the cache.
    let hits_from = |target: usize, sources: &[SynthEntry]| -> usize {
        sources
            .iter()
            .filter(|source| {
                source.chains.iter().any(|chain| {
                    let hhr = corpus
                        .join("alignments")
                        .join(&chain.key)
                        .join("hhr/pdb70_hits.hhr");
                    let hits = scalefold_ingest::read_hhr(&hhr).unwrap_or_default();
                    hits.iter()
                        .any(|h| h.name.to_ascii_lowercase().starts_with(&all[target].id))
                })
            })
            .count()
    };
    let broken: Vec<usize> = (0..all.len())
        .filter(|&e| !all[e].files[0].path.to_string_lossy().ends_with(".gz"))
        .filter(|&e| hits_from(e, &all[..e]) == 0 && hits_from(e, &all[e + 1..]) > 0)
        .take(2)
        .collect();
    assert!(
        !broken.is_empty(),
        "no plain file is hit only by later sources"
    );
    for &e in &broken {
        break_a_coordinate(&corpus.join(&all[e].files[0].path));
    }
    let report = run(&config);
    assert_eq!(report.failed(), broken.len(), "{}", report.summary());
    // Every file exactly once: its own rows and template lookups share the cache, and
    // a file that failed for its own source is not parsed again by later lookups.
    assert_eq!(report.structures_parsed, all.len(), "{}", report.summary());
}

#[test]
fn filters_drop_exactly_the_inputs_they_describe() {
    let dir = tempfile::tempdir().unwrap();
    let synth = small_corpus(30, 4);
    let base = corpus_and_config(dir.path(), &synth);
    let all = entries(&synth);
    let config = IngestConfig {
        filters: Filters {
            max_resolution: Some(2.5),
            min_date: Some("2000-01-01".into()),
            max_date: Some("2020-12-31".into()),
            min_length: Some(40),
            max_single_residue_fraction: Some(0.5),
            max_unknown_fraction: Some(0.0),
        },
        ..base
    };
    let report = run(&config);
    assert_eq!(report.failed(), 0, "{}", report.summary());
    let mut kept = Vec::new();
    for e in &all {
        let entry_out = e.resolution > 2.5
            || e.release_date.as_str() < "2000-01-01"
            || e.release_date.as_str() > "2020-12-31";
        for c in &e.chains {
            let n = c.sequence.len();
            let most = (0..=255u8)
                .map(|r| c.sequence.bytes().filter(|&b| b == r).count())
                .max()
                .unwrap();
            let unknown = c.sequence.bytes().filter(|&b| b == b'X').count();
            if !entry_out && n >= 40 && most * 2 <= n && unknown == 0 {
                kept.push(c.key.clone());
            }
        }
    }
    let mut got: Vec<String> = rows(&config.out)
        .into_iter()
        .map(|r| r.record.chain_id)
        .collect();
    got.sort();
    kept.sort();
    assert_eq!(got, kept);
    assert!(
        !kept.is_empty() && kept.len() < 30,
        "the filters keep some and drop some"
    );
    assert!(report.filtered() > 0);
    assert!(report.counts().keys().any(|k| k.starts_with("filtered:")));
}

/// An empty loop of two items (`_exptl` with no rows) once made the CIF column reader
/// panic; whether the parser rejects such a file or panics on it, the job reports that
/// one file as failed and writes everything else.
#[test]
fn a_file_that_upsets_the_parser_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let synth = SynthConfig {
        gzip_fraction: 0.0,
        ..small_corpus(8, 2)
    };
    let config = corpus_and_config(dir.path(), &synth);
    let all = entries(&synth);
    let victim = dir.path().join("corpus").join(&all[0].files[0].path);
    let text = std::fs::read_to_string(&victim).unwrap();
    let start = text.find("_exptl.entry_id").unwrap();
    let end = start + text[start..].find("#\n").unwrap();
    let broken = format!(
        "{}loop_\n_exptl.entry_id\n_exptl.method\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&victim, broken).unwrap();
    let report = run(&config);
    let failed: Vec<_> = report
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{}", report.summary());
    assert!(
        failed[0]
            .input
            .ends_with(&*all[0].files[0].path.file_name().unwrap().to_string_lossy())
    );
    assert!(["parse", "internal"].contains(&failed[0].stage.as_str()));
    let written: usize = all[1..].iter().map(|e| e.chains.len()).sum();
    assert_eq!(rows(&config.out).len(), written);
}

/// A homomer chain without its own alignment folder fails, unless the duplicate-chain
/// file names its group: then it gets the group's alignments.
#[test]
fn duplicate_chains_share_their_group_alignments() {
    let dir = tempfile::tempdir().unwrap();
    let synth = small_corpus(30, 13);
    let config = corpus_and_config(dir.path(), &synth);
    let plan = CorpusPlan::new(&synth).unwrap();
    let group = plan
        .duplicates()
        .into_iter()
        .next()
        .expect("a homomer in the corpus");
    let corpus = dir.path().join("corpus");
    std::fs::remove_dir_all(corpus.join("alignments").join(&group[1])).unwrap();

    let report = run(&config);
    assert_eq!(report.failed(), 1);
    assert!(report.lines[0].reason.contains("no alignment folder"));

    let out = dir.path().join("with-duplicates").display().to_string();
    let report = run(&IngestConfig {
        out: out.clone(),
        duplicate_chains: Some(corpus.join("duplicate_chains.txt").display().to_string()),
        ..config
    });
    assert_eq!(report.failed(), 0, "{}", report.summary());
    let rows = rows(&out);
    let row = |key: &str| rows.iter().find(|r| r.record.chain_id == key).unwrap();
    let (first, second) = (row(&group[0]), row(&group[1]));
    assert_eq!(second.record.msa, first.record.msa);
    assert_eq!(second.record.deletion_matrix, first.record.deletion_matrix);
    assert_eq!(second.record.sequence, first.record.sequence);
}
