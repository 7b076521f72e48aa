//! Trains the compression dictionary of each api from an NDJSON export (see
//! `scripts/train-dicts.sh`, which makes the export from generated sessions and calls this).
//!
//! Usage: `train_dicts EXPORT.ndjson OUT_DIR` → `OUT_DIR/{api}.zdict`, one per api in the export.

use std::collections::BTreeMap;
use std::io::BufRead;

/// Dictionary size: 32 KiB compressed session documents no better than 16 KiB (measured), and
/// every store keeps each dictionary, prepared for compression, in memory.
const DICT_BYTES: usize = 16 * 1024;
/// The store's compression level (`LEVEL` in src/store/codec.rs), for the ratio printed.
const LEVEL: i32 = 1;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [export, out_dir] = &args[..] else {
        anyhow::bail!("usage: train_dicts EXPORT.ndjson OUT_DIR");
    };
    let mut samples: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for line in std::io::BufReader::new(std::fs::File::open(export)?).lines() {
        let record: serde_json::Value = serde_json::from_str(&line?)?;
        if record["kind"] != "session" {
            continue;
        }
        let api = record["api"].as_str().unwrap_or_default().to_owned();
        samples
            .entry(api)
            .or_default()
            .push(serde_json::to_vec(&record["session"])?);
    }
    std::fs::create_dir_all(out_dir)?;
    for (api, docs) in &samples {
        let dict = zstd::dict::from_samples(docs, DICT_BYTES)?;
        let path = std::path::Path::new(out_dir).join(format!("{api}.zdict"));
        std::fs::write(&path, &dict)?;
        let raw: usize = docs.iter().map(Vec::len).sum();
        let packed: usize = docs
            .iter()
            .map(|d| {
                zstd::bulk::Compressor::with_dictionary(LEVEL, &dict)
                    .and_then(|mut c| c.compress(d))
            })
            .map(|c| c.map(|c| c.len()))
            .sum::<std::io::Result<usize>>()?;
        println!(
            "{api}: {} samples, {} B dictionary → {}, training set {:.2}x smaller",
            docs.len(),
            dict.len(),
            path.display(),
            raw as f64 / packed as f64
        );
    }
    Ok(())
}
