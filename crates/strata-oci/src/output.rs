//! Writing a built image out: an OCI image layout directory or a docker-archive.
//!
//! Both writers are atomic for the caller: they work in a temporary sibling of the target and
//! rename it into place only when complete, so a failed build leaves nothing half-written.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::compress::Compression;
use crate::digest::Digest;
use crate::image::{self, Descriptor, INDEX_MEDIA_TYPE, Index, REF_NAME};
use crate::layer::LayerDigests;

/// A layer blob on disk.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    /// The file holding the (compressed) blob.
    pub path: PathBuf,
    /// Its digests and sizes.
    pub digests: LayerDigests,
    /// How it is compressed.
    pub compression: Compression,
    /// Media type, as the manifest names it.
    pub media_type: String,
}

/// A complete image, ready to be written out.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Manifest bytes.
    pub manifest: Vec<u8>,
    /// Media type of the manifest (OCI, or Docker schema 2 for pulled images).
    pub manifest_media_type: String,
    /// Their digest.
    pub manifest_digest: Digest,
    /// Configuration bytes.
    pub config: Vec<u8>,
    /// Their digest.
    pub config_digest: Digest,
    /// The layers, bottom first.
    pub layers: Vec<LayerBlob>,
    /// Repository name (`strata/0f3a...`).
    pub name: String,
    /// Tag.
    pub tag: String,
}

impl BuiltImage {
    /// `NAME:TAG`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
}

/// A failure while writing an image out.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A file operation failed.
    #[error("cannot {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The target exists and is not something strata may replace.
    #[error("`{0}` exists and is not an OCI image layout; refusing to replace it")]
    NotALayout(PathBuf),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OutputError {
    let path = path.to_owned();
    move |source| OutputError::Io {
        action,
        path,
        source,
    }
}

/// Writes `image` as an OCI image layout at `dir`, replacing an image layout already there.
/// The index names the image by its tag (`org.opencontainers.image.ref.name`), so
/// `skopeo inspect oci:DIR:TAG` and `umoci unpack --image DIR:TAG` find it.
pub fn write_oci_layout(image: &BuiltImage, dir: &Path) -> Result<(), OutputError> {
    if dir.exists() && !dir.join("oci-layout").is_file() && !is_empty_dir(dir) {
        return Err(OutputError::NotALayout(dir.to_owned()));
    }
    let parent = parent_of(dir);
    fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
    let temp = tempfile::Builder::new()
        .prefix(&temp_prefix())
        .tempdir_in(&parent)
        .map_err(io_err("create a temporary directory in", &parent))?;
    let root = temp.path();
    let blobs = root.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io_err("create", &blobs))?;
    let blob_file = |_: &Path, d: &Digest| d.blob_path(root);

    write_file(
        &root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    write_file(&blob_file(&blobs, &image.config_digest), &image.config)?;
    write_file(&blob_file(&blobs, &image.manifest_digest), &image.manifest)?;
    for layer in &image.layers {
        link_or_copy(&layer.path, &blob_file(&blobs, &layer.digests.digest))?;
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(INDEX_MEDIA_TYPE.to_owned()),
        manifests: vec![Descriptor {
            media_type: image.manifest_media_type.clone(),
            digest: image.manifest_digest.clone(),
            size: image.manifest.len() as u64,
            annotations: [(REF_NAME.to_owned(), image.tag.clone())].into(),
            platform: None,
        }],
    };
    write_file(&root.join("index.json"), &image::to_blob(&index).0)?;

    // Swap the finished layout in; an old layout is moved aside first and removed after.
    let done = temp.keep();
    if dir.exists() {
        let old = parent.join(format!(
            ".strata-old-{}",
            dir.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let _ = fs::remove_dir_all(&old);
        fs::rename(dir, &old).map_err(io_err("move aside", dir))?;
        fs::rename(&done, dir).map_err(io_err("rename into", dir))?;
        let _ = fs::remove_dir_all(&old);
    } else if let Err(e) = fs::rename(&done, dir) {
        let _ = fs::remove_dir_all(&done);
        return Err(io_err("rename into", dir)(e));
    }
    Ok(())
}

/// Writes `image` as a docker-archive file at `path` (what `docker save` writes and
/// `docker load` / `podman load` read), atomically.
pub fn write_docker_archive_file(image: &BuiltImage, path: &Path) -> Result<(), OutputError> {
    let parent = parent_of(path);
    fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
    let mut temp = tempfile::Builder::new()
        .prefix(&temp_prefix())
        .tempfile_in(&parent)
        .map_err(io_err("create a temporary file in", &parent))?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, temp.as_file_mut());
        write_docker_archive(image, &mut out)?;
        out.flush().map_err(io_err("write", path))?;
    }
    temp.persist(path)
        .map_err(|e| io_err("rename into", path)(e.error))?;
    Ok(())
}

/// Streams `image` as a docker-archive to `out`. Layers are stored uncompressed, as the
/// format expects (their digests are the config's `diff_ids`).
pub fn write_docker_archive(image: &BuiltImage, out: &mut dyn Write) -> Result<(), OutputError> {
    let stdout = Path::new("<output>");
    let werr = |e| io_err("write", stdout)(e);
    let config_name = format!("{}.json", image.config_digest.hex());
    append(out, &config_name, &image.config).map_err(werr)?;

    // A pulled layer's uncompressed size is unknown until it is decompressed once; the tar
    // header needs it before the data.
    let mut layers = image.layers.clone();
    for layer in &mut layers {
        if layer.digests.uncompressed_size == 0 && layer.compression != Compression::None {
            let mut reader = decompressor(layer)?;
            layer.digests.uncompressed_size = io::copy(&mut reader, &mut io::sink())
                .map_err(io_err("decompress", &layer.path))?;
        }
    }
    let layer_names = write_layers_decompressed(&layers, out)?;

    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [image.reference()],
        "Layers": layer_names,
    }]);
    append(out, "manifest.json", manifest.to_string().as_bytes()).map_err(werr)?;
    let repositories = serde_json::json!({
        image.name.clone(): { image.tag.clone(): layer_names.last().map(|n| n.trim_end_matches("/layer.tar")).unwrap_or_default() }
    });
    append(out, "repositories", repositories.to_string().as_bytes()).map_err(werr)?;
    out.write_all(&[0u8; 1024]).map_err(werr)?;
    Ok(())
}

/// Writes each layer as `<diff_id>/layer.tar`, uncompressed, in order. Layers are decompressed
/// by a few worker threads ahead of the writer (each bounded to a few MiB in flight), since
/// decompressing is what this costs; the output bytes do not depend on the thread count.
fn write_layers_decompressed(
    layers: &[LayerBlob],
    out: &mut dyn Write,
) -> Result<Vec<String>, OutputError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

    type Chunk = Result<Vec<u8>, OutputError>;
    let werr = |e| io_err("write", Path::new("<output>"))(e);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let (senders, receivers): (Vec<SyncSender<Chunk>>, Vec<Receiver<Chunk>>) =
        layers.iter().map(|_| sync_channel(8)).unzip();
    let senders: Vec<std::sync::Mutex<Option<SyncSender<Chunk>>>> = senders
        .into_iter()
        .map(|s| std::sync::Mutex::new(Some(s)))
        .collect();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);

    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                // Layers are taken in order, so the one the writer waits for always has a
                // worker: no deadlock however the bounded channels fill.
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(layer) = layers.get(i) else { break };
                    let Some(tx) = senders[i].lock().ok().and_then(|mut s| s.take()) else {
                        break;
                    };
                    let mut reader = match decompressor(layer) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            continue;
                        }
                    };
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let mut buf = vec![0u8; 1 << 20];
                        match read_full(&mut reader, &mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                buf.truncate(n);
                                if tx.send(Ok(buf)).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(Err(io_err("decompress", &layer.path)(e)));
                                break;
                            }
                        }
                    }
                }
            });
        }

        let result = (|| {
            let mut names = Vec::new();
            for (layer, rx) in layers.iter().zip(&receivers) {
                let name = format!("{}/layer.tar", layer.digests.diff_id.hex());
                let dir = format!("{}/", layer.digests.diff_id.hex());
                out.write_all(&crate::tar::member_header(&dir, true, 0))
                    .map_err(werr)?;
                out.write_all(&crate::tar::member_header(
                    &name,
                    false,
                    layer.digests.uncompressed_size,
                ))
                .map_err(werr)?;
                let mut copied = 0u64;
                for chunk in rx.iter() {
                    let chunk = chunk?;
                    copied += chunk.len() as u64;
                    out.write_all(&chunk).map_err(werr)?;
                }
                if copied != layer.digests.uncompressed_size {
                    return Err(io_err("decompress", &layer.path)(io::Error::other(
                        format!(
                            "layer is {copied} bytes uncompressed, expected {}",
                            layer.digests.uncompressed_size
                        ),
                    )));
                }
                pad(out, copied).map_err(werr)?;
                names.push(name);
            }
            Ok(names)
        })();
        if result.is_err() {
            // Unblock and end the workers: drop every receiver.
            stop.store(true, Ordering::Relaxed);
            drop(receivers);
        }
        result
    })
}

/// Reads until `buf` is full or the stream ends.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A reader of the layer's uncompressed tar.
fn decompressor(layer: &LayerBlob) -> Result<Box<dyn Read>, OutputError> {
    let file = File::open(&layer.path).map_err(io_err("open", &layer.path))?;
    let file = BufReader::with_capacity(1 << 20, file);
    crate::compress::decompress(file, layer.compression).map_err(io_err("read", &layer.path))
}

fn append(out: &mut dyn Write, name: &str, bytes: &[u8]) -> io::Result<()> {
    out.write_all(&crate::tar::member_header(name, false, bytes.len() as u64))?;
    out.write_all(bytes)?;
    pad(out, bytes.len() as u64)
}

fn pad(out: &mut dyn Write, len: u64) -> io::Result<()> {
    out.write_all(crate::tar::padding(len))
}

/// Prefix of this process's temporary files next to an output, so an interrupted build can
/// find and remove exactly its own.
pub fn temp_prefix() -> String {
    format!(".strata-tmp-{}-", std::process::id())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    fs::write(path, bytes).map_err(io_err("write", path))
}

/// Hard-links a store blob into the layout (same file system, no copy), else copies it.
fn link_or_copy(from: &Path, to: &Path) -> Result<(), OutputError> {
    if to.exists() {
        return Ok(());
    }
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map_err(io_err("copy", from))?;
    Ok(())
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}
