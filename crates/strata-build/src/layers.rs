//! Stage 3: the planned layers, written into the store in parallel (or found there).

use std::io::BufWriter;

use rayon::prelude::*;
use strata_fstree::{Entry, Tree};
use strata_oci::layer::{LayerOptions, write_layer};
use strata_source::{StoreObject, hash_parts};
use strata_store::Store;

use crate::plan::PlannedLayer;
use crate::{BuildError, BuildOptions, LAYER_FORMAT, LayerRecord, LayerReport, Reporter};

/// Writes every planned layer (numbered from 1 in plan order) and reports them in order.
pub(crate) fn write(
    planned: &[PlannedLayer],
    store: &Store,
    opts: &BuildOptions,
    reporter: &dyn Reporter,
) -> Result<Vec<LayerReport>, BuildError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .build()
        .map_err(|e| {
            BuildError::Store(strata_store::StoreError::Io {
                action: "start worker threads for",
                path: store.root().to_owned(),
                source: std::io::Error::other(e),
            })
        })?;
    let built: Vec<Result<(LayerRecord, bool), BuildError>> = pool.install(|| {
        planned
            .par_iter()
            .enumerate()
            .map(|(i, layer)| build_layer(i + 1, layer, store, opts, reporter))
            .collect()
    });
    let mut layers = Vec::new();
    for (layer, result) in planned.iter().zip(built) {
        let (record, cached) = result?;
        layers.push(report(layer, &record, cached));
    }
    Ok(layers)
}

/// The report of a written layer.
pub(crate) fn report(layer: &PlannedLayer, record: &LayerRecord, cached: bool) -> LayerReport {
    LayerReport {
        digest: record.digests.digest.clone(),
        diff_id: record.digests.diff_id.clone(),
        size: record.digests.size,
        uncompressed_size: record.digests.uncompressed_size,
        part: layer.part,
        objects: layer.objects.iter().map(|o| o.id.clone()).collect(),
        cached,
    }
}

/// Writes one layer into the store, or finds it there already.
pub(crate) fn build_layer(
    index: usize,
    layer: &PlannedLayer,
    store: &Store,
    opts: &BuildOptions,
    reporter: &dyn Reporter,
) -> Result<(LayerRecord, bool), BuildError> {
    let sde = opts.source_date_epoch.to_string();
    let key = hash_parts(
        [
            LAYER_FORMAT.as_bytes(),
            opts.compression.as_str().as_bytes(),
            sde.as_bytes(),
        ]
        .into_iter()
        .chain(layer.objects.iter().map(|o| o.cache_key.as_bytes()))
        .chain([parents_key(&layer.parents).as_bytes()]),
    );
    let bytes: u64 = layer.objects.iter().map(StoreObject::size).sum();
    let lookup = |store: &Store| -> Result<Option<LayerRecord>, BuildError> {
        match store.layer_record::<LayerRecord>(&key)? {
            Some(rec) if store.has_blob(&rec.digests.digest)? => Ok(Some(rec)),
            _ => Ok(None),
        }
    };
    if let Some(rec) = lookup(store)? {
        reporter.layer_done(index, bytes, true);
        return Ok((rec, true));
    }
    // Another process may be writing the same layer: wait for it, then look again.
    let _lock = store.lock_key(&key)?;
    if let Some(rec) = lookup(store)? {
        reporter.layer_done(index, bytes, true);
        return Ok((rec, true));
    }

    let tree = Tree::from_entries(
        layer.parents.iter().cloned().chain(
            layer
                .objects
                .iter()
                .flat_map(|o| o.tree.entries().iter().cloned()),
        ),
    );
    let entries: Vec<_> = tree.entries().iter().collect();
    let layer_err = |source| BuildError::Layer {
        index,
        objects: describe(&layer.objects),
        source,
    };
    let temp = store.temp_file()?;
    let digests = {
        let out = BufWriter::with_capacity(1 << 20, temp.as_file());
        let lopts = LayerOptions {
            compression: opts.compression,
            threads: opts.threads.max(1),
            source_date_epoch: opts.source_date_epoch,
        };
        write_layer(&entries, &lopts, out).map_err(layer_err)?
    };
    store.commit_blob(temp, &digests.digest)?;
    let record = LayerRecord {
        digests,
        compression: opts.compression.as_str().to_owned(),
    };
    store.put_layer_record(&key, &record)?;
    reporter.layer_done(index, bytes, false);
    Ok((record, false))
}

/// What the added parent directories contribute to a layer's bytes, for its cache key.
fn parents_key(parents: &[Entry]) -> String {
    let mut s = String::new();
    for p in parents {
        s.push_str(&format!(
            "{} {:o} {} {} {} {:?}\n",
            p.path, p.mode, p.uid, p.gid, p.mtime, p.xattrs
        ));
    }
    s
}

fn describe(objects: &[StoreObject]) -> String {
    let mut ids: Vec<&str> = objects.iter().map(|o| o.id.as_str()).collect();
    if ids.len() > 3 {
        let more = ids.len() - 3;
        ids.truncate(3);
        format!("{} and {more} more", ids.join(", "))
    } else {
        ids.join(", ")
    }
}
