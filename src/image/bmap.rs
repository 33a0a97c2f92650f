//! bmaptool's block map (`IMAGE.bmap`): an XML file listing the block ranges of an image that
//! hold data, each with a checksum, and a checksum of the map itself. `bmaptool copy` writes only
//! those ranges and checks every checksum, so a map left over from before a change to the image
//! makes it fail. A command that changes an image with a map next to it rewrites the map from
//! the changed image.
//!
//! The format is read here from bmaptool 3.x's sources, `BmapCopy.py` (the reader) and
//! `BmapCreate.py` (the writer). The root `<bmap version="MAJOR.MINOR">` contains `ImageSize`
//! (bytes), `BlockSize` (bytes), `BlocksCount` (the image size divided by the block size,
//! rounded up), `MappedBlocksCount`, `ChecksumType` (a Python hashlib name), `BmapFileChecksum`
//! and `BlockMap`. `BlockMap` lists `<Range chksum="HEX"> FIRST-LAST </Range>` elements, and a
//! single block is written `FIRST`. A
//! range's checksum covers its blocks, cut at the end of the image for the last block. The file
//! checksum covers the whole map with its own value written as the same number of `0`
//! characters. Version 1.4 is the same format as 2.0 (bmaptool released it under the wrong
//! number). Versions 1.0 to 1.3 have no `ChecksumType`: 1.3 uses SHA-1 in `BmapFileSHA1` and
//! `sha1=` attributes, and older versions have no checksums at all.
//!
//! The new map keeps the old map's version (1.4 or 2.0) and checksum type (sha256 or sha512) and
//! its block size. Any other old map is replaced by a version 2.0 map with SHA-256, which every
//! bmaptool since 3.1 reads: writing SHA-1 or MD5 would need hash crates this tool does not use
//! otherwise, and a map without checksums would let `bmaptool copy` skip its check.
//!
//! Mapped ranges are the image file's data ranges as SEEK_DATA and SEEK_HOLE report them,
//! widened to whole blocks. Every range is hashed anew, never copied from the old map, so a map
//! that was already out of date before this run is correct afterwards.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256, Sha512};

use crate::image::compressed::Compression;
use crate::image::sparse_copy::{next_data, next_hole};

/// Suffix Yocto gives the block map of an image: `core-image.sdimg.bmap`.
pub const BMAP_SUFFIX: &str = ".bmap";

/// Block size of a map written without a readable old one. It matches `bmaptool create`, which
/// uses the filesystem's block size: 4096 bytes on ext4, XFS and Btrfs by default.
const DEFAULT_BLOCK_SIZE: u64 = 4096;

/// Maximum size of an old map that is read. A map of a few hundred thousand ranges is well under it.
const MAX_MAP_LEN: u64 = 64 << 20;

/// Maximum block size accepted from an old map.
const MAX_BLOCK_SIZE: u64 = 1 << 20;

/// Bytes read from the image at a time while hashing.
const HASH_CHUNK_LEN: usize = 8 << 20;

/// An error while reading the image or writing its map.
#[derive(Debug, thiserror::Error)]
pub enum BmapError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: is not a regular file; remove it, or pass --no-bmap to leave it alone")]
    NotAFile { path: PathBuf },
    #[error(
        "{path}: cannot follow the symbolic link to the block map ({source}); remove the link, or pass --no-bmap"
    )]
    BrokenLink { path: PathBuf, source: io::Error },
    #[error("{path}: the image is empty, and bmaptool rejects a block map of an empty image")]
    EmptyImage { path: PathBuf },
}

/// Hash function of the range and file checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumType {
    Sha256,
    Sha512,
}

impl ChecksumType {
    /// Returns the name in `ChecksumType`, as Python's hashlib spells it.
    fn name(self) -> &'static str {
        match self {
            ChecksumType::Sha256 => "sha256",
            ChecksumType::Sha512 => "sha512",
        }
    }

    /// Length of a checksum written as hex digits.
    fn hex_len(self) -> usize {
        match self {
            ChecksumType::Sha256 => 64,
            ChecksumType::Sha512 => 128,
        }
    }

    fn hash(self, chunks: &mut dyn FnMut(&mut dyn FnMut(&[u8])) -> io::Result<()>) -> io::Result<String> {
        match self {
            ChecksumType::Sha256 => hash_with::<Sha256>(chunks),
            ChecksumType::Sha512 => hash_with::<Sha512>(chunks),
        }
    }
}

/// Feeds the chunks that `chunks` produces to a new `D` and returns its digest as hex.
fn hash_with<D: Digest>(
    chunks: &mut dyn FnMut(&mut dyn FnMut(&[u8])) -> io::Result<()>,
) -> io::Result<String> {
    let mut hasher = D::new();
    chunks(&mut |chunk| hasher.update(chunk))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Version, checksum type and block size of a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapFormat {
    /// `"1.4"` or `"2.0"`, the versions whose layout this module writes.
    pub version: &'static str,
    pub checksum: ChecksumType,
    /// Bytes per block.
    pub block_size: u64,
}

impl Default for MapFormat {
    fn default() -> Self {
        MapFormat { version: "2.0", checksum: ChecksumType::Sha256, block_size: DEFAULT_BLOCK_SIZE }
    }
}

/// Format of an old map, as read from its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldFormat {
    /// A format this module writes again, unchanged.
    Kept(MapFormat),
    /// A valid map in a version or checksum type this module does not write, described for the
    /// log ("format 1.3 with SHA-1"). The new map then uses [`MapFormat::default`] with this
    /// block size.
    Replaced { description: String, block_size: u64 },
}

/// Reads the format of an old map. Returns the reason as `Err` when the text is not a block map.
pub fn parse_format(text: &str) -> Result<OldFormat, String> {
    let text = &strip_comments(text)?;
    let version = root_version(text).ok_or("no <bmap version=\"...\"> element")?;
    let (major, minor) = version
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)))
        .ok_or_else(|| format!("invalid version {version:?}"))?;
    let block_size = element_text(text, "BlockSize")
        .ok_or("no <BlockSize> element")?
        .parse::<u64>()
        .ok()
        .filter(|size| *size > 0 && *size <= MAX_BLOCK_SIZE && size % 512 == 0)
        .ok_or_else(|| format!("invalid <BlockSize>: expected a multiple of 512 up to {MAX_BLOCK_SIZE}"))?;
    check_counts(text, block_size)?;

    let has_checksum_type = major >= 2 || (major, minor) == (1, 4);
    if !has_checksum_type {
        let checksums = if (major, minor) == (1, 3) { "SHA-1" } else { "no checksums" };
        return Ok(OldFormat::Replaced {
            description: format!("format {version} with {checksums}"),
            block_size,
        });
    }
    let checksum_name = element_text(text, "ChecksumType").ok_or("no <ChecksumType> element")?;
    let checksum = match checksum_name.to_ascii_lowercase().as_str() {
        "sha256" => Some(ChecksumType::Sha256),
        "sha512" => Some(ChecksumType::Sha512),
        _ => None,
    };
    let kept_version = match (major, minor) {
        (1, 4) => Some("1.4"),
        (2, 0) => Some("2.0"),
        _ => None,
    };
    match (kept_version, checksum) {
        (Some(version), Some(checksum)) => Ok(OldFormat::Kept(MapFormat { version, checksum, block_size })),
        _ => Ok(OldFormat::Replaced {
            description: format!("format {version} with {}", escape_for_log(checksum_name)),
            block_size,
        }),
    }
}

/// Removes the XML comments, which in maps from bmaptool name elements such as
/// `<MappedBlocksCount>` in their prose.
fn strip_comments(text: &str) -> Result<String, String> {
    let mut stripped = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<!--") {
        stripped.push_str(&rest[..start]);
        let end = rest[start..].find("-->").ok_or("a comment without its closing -->")?;
        rest = &rest[start + end + "-->".len()..];
    }
    stripped.push_str(rest);
    Ok(stripped)
}

/// Checks what bmaptool checks before it uses a map: the root element is closed, `<ImageSize>` is
/// a byte count, and `<BlocksCount>` and `<MappedBlocksCount>`, where given, agree with it.
fn check_counts(text: &str, block_size: u64) -> Result<(), String> {
    if !text.trim_end().ends_with("</bmap>") {
        return Err("no closing </bmap> at the end".to_string());
    }
    let count = |name: &str| -> Result<Option<u64>, String> {
        let Some(value) = element_text(text, name) else { return Ok(None) };
        let count = value.parse::<u64>().map_err(|_| {
            format!("invalid <{name}> {:?}: expected a non-negative integer", escape_for_log(value))
        })?;
        Ok(Some(count))
    };

    let image_size = count("ImageSize")?.ok_or("no <ImageSize> element")?;
    let blocks = image_size.div_ceil(block_size);
    if let Some(blocks_count) = count("BlocksCount")?
        && blocks_count != blocks
    {
        return Err(format!("<BlocksCount> {blocks_count} does not match <ImageSize> {image_size}"));
    }
    if let Some(mapped) = count("MappedBlocksCount")?
        && mapped > blocks
    {
        return Err(format!("<MappedBlocksCount> {mapped} is more than the image's {blocks} blocks"));
    }
    Ok(())
}

/// Returns the value of the root element's `version` attribute.
fn root_version(text: &str) -> Option<&str> {
    let start = text.find("<bmap")?;
    let tag = &text[start..start + text[start..].find('>')?];
    let attribute = tag.find("version=")? + "version=".len();
    let quote = tag[attribute..].chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &tag[attribute + 1..];
    Some(value[..value.find(quote)?].trim())
}

/// Returns the trimmed text of the first `<NAME>` element, which in a block map contains no markup.
fn element_text<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    Some(text[start..end].trim())
}

/// Keeps a value from a file short and free of control characters for a log line.
fn escape_for_log(value: &str) -> String {
    value.chars().take(40).flat_map(char::escape_debug).collect()
}

/// A run of blocks, first and last included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRange {
    pub first: u64,
    pub last: u64,
}

/// Lists the blocks of `file` (`image_len` bytes long) that hold data, merging ranges that touch.
pub fn mapped_ranges(file: &File, image_len: u64, block_size: u64) -> io::Result<Vec<BlockRange>> {
    let mut ranges: Vec<BlockRange> = Vec::new();
    let mut offset = 0;
    while offset < image_len {
        let Some(data_start) = next_data(file, offset)? else { break };
        if data_start >= image_len {
            break;
        }
        let data_end = next_hole(file, data_start)?.min(image_len);
        let range = BlockRange { first: data_start / block_size, last: (data_end - 1) / block_size };
        match ranges.last_mut() {
            Some(previous) if range.first <= previous.last + 1 => {
                previous.last = previous.last.max(range.last)
            }
            _ => ranges.push(range),
        }
        offset = data_end;
    }
    Ok(ranges)
}

/// Writes the block map of `image`, `image_len` bytes long with `ranges` mapped, in `format`.
/// Returns the map's text.
pub fn render_map(
    image: &File,
    image_len: u64,
    ranges: &[BlockRange],
    format: MapFormat,
) -> io::Result<String> {
    let checksums = range_checksums(image, image_len, ranges, format)?;
    let blocks = image_len.div_ceil(format.block_size);
    let mapped: u64 = ranges.iter().map(|range| range.last - range.first + 1).sum();
    let zeros = "0".repeat(format.checksum.hex_len());

    let mut text = String::with_capacity(1024 + ranges.len() * (format.checksum.hex_len() + 48));
    text.push_str("<?xml version=\"1.0\" ?>\n");
    text.push_str(&format!(
        "<!-- Block map for bmaptool, written by mender-preauth {}: the block ranges of the image\n     \
         that hold data and their checksums. The file checksum is taken with its own value as zeros. -->\n",
        env!("CARGO_PKG_VERSION")
    ));
    text.push_str(&format!("<bmap version=\"{}\">\n", format.version));
    text.push_str(&format!("    <ImageSize> {image_len} </ImageSize>\n"));
    text.push_str(&format!("    <BlockSize> {} </BlockSize>\n", format.block_size));
    text.push_str(&format!("    <BlocksCount> {blocks} </BlocksCount>\n"));
    text.push_str(&format!("    <!-- {} of {blocks} blocks hold data -->\n", mapped));
    text.push_str(&format!("    <MappedBlocksCount> {mapped} </MappedBlocksCount>\n"));
    text.push_str(&format!("    <ChecksumType> {} </ChecksumType>\n", format.checksum.name()));
    text.push_str("    <BmapFileChecksum> ");
    let checksum_at = text.len();
    text.push_str(&zeros);
    text.push_str(" </BmapFileChecksum>\n");
    text.push_str("    <BlockMap>\n");
    for (range, checksum) in ranges.iter().zip(&checksums) {
        let blocks = match range.first == range.last {
            true => range.first.to_string(),
            false => format!("{}-{}", range.first, range.last),
        };
        text.push_str(&format!("        <Range chksum=\"{checksum}\"> {blocks} </Range>\n"));
    }
    text.push_str("    </BlockMap>\n</bmap>\n");

    let file_checksum = format.checksum.hash(&mut |feed| {
        feed(text.as_bytes());
        Ok(())
    })?;
    text.replace_range(checksum_at..checksum_at + zeros.len(), &file_checksum);
    Ok(text)
}

/// Hashes each range's bytes, cut at the end of the image. A second thread reads the next chunk
/// while this one hashes the last, as `volume_sha256` does for a rootfs.
fn range_checksums(
    image: &File,
    image_len: u64,
    ranges: &[BlockRange],
    format: MapFormat,
) -> io::Result<Vec<String>> {
    let spans: Vec<(u64, u64)> = ranges
        .iter()
        .map(|range| {
            let start = range.first * format.block_size;
            let end = ((range.last + 1) * format.block_size).min(image_len);
            (start, end)
        })
        .collect();

    let (filled_sender, filled) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(1);
    let (empty_sender, empty) = std::sync::mpsc::channel::<Vec<u8>>();
    for _ in 0..2 {
        let _ = empty_sender.send(Vec::new());
    }
    let reader_spans = spans.clone();

    // Moving the senders into the closures drops them when they return, so neither side waits
    // for a buffer that will not come.
    std::thread::scope(move |scope| {
        scope.spawn(move || {
            for (start, end) in reader_spans {
                let mut offset = start;
                while offset < end {
                    let Ok(mut buffer) = empty.recv() else { return };
                    let chunk_len = (end - offset).min(HASH_CHUNK_LEN as u64) as usize;
                    buffer.resize(chunk_len, 0);
                    let read = image.read_exact_at(&mut buffer, offset).map(|()| buffer);
                    let failed = read.is_err();
                    if filled_sender.send(read).is_err() || failed {
                        return;
                    }
                    offset += chunk_len as u64;
                }
            }
        });

        let mut checksums = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            let checksum = format.checksum.hash(&mut |feed| {
                let mut hashed = start;
                while hashed < end {
                    let buffer = filled.recv().map_err(|_| {
                        io::Error::other("the thread reading the image stopped before the end")
                    })??;
                    feed(&buffer);
                    hashed += buffer.len() as u64;
                    let _ = empty_sender.send(buffer);
                }
                Ok(())
            })?;
            checksums.push(checksum);
        }
        Ok(checksums)
    })
}

/// Path of the map Yocto deploys next to `image`: the image's file name with `.bmap` appended.
pub fn map_path(image: &Path) -> PathBuf {
    let mut path = image.as_os_str().to_owned();
    path.push(BMAP_SUFFIX);
    PathBuf::from(path)
}

/// Returns where Yocto puts the map of a compressed image: beside it, named after the
/// uncompressed image (`core-image.sdimg.bmap` for `core-image.sdimg.xz`), as bmaptool also
/// looks for it. `None` when the name has no compression suffix.
pub fn stem_map_path(image: &Path) -> Option<PathBuf> {
    Compression::from_suffix(image)?;
    Some(map_path(&image.with_extension("")))
}

/// A map to write once the image has been written: where it goes, in which format, and the
/// temporary file it is built in. Preparing it before the image is written makes an
/// unwritable directory fail while the image is still unchanged.
#[derive(Debug)]
pub struct PendingMap {
    /// Path of the new map, with symbolic links followed, because Yocto's deploy directory
    /// links `IMAGE.bmap` to a dated file.
    path: PathBuf,
    format: MapFormat,
    /// Description of the old map's format for the log, when it is not kept.
    replaced: Option<String>,
    /// Permission bits of the old map, kept on the new one.
    mode: u32,
    temporary: tempfile::NamedTempFile,
}

/// Prepares the map of `written`, the image a command is about to write, when `source` (the
/// image read) or `written` has a map next to it. Returns `None` when neither has one.
///
/// The format comes from `source`'s map, else from `written`'s. An old map that cannot be read
/// or is not a block map is logged as a warning and replaced by a new one. A Yocto build deploys
/// the map only for flashing the image, and a broken map cannot serve that.
pub fn prepare(source: &Path, written: &Path) -> Result<Option<PendingMap>, BmapError> {
    let written_map = map_path(written);
    let candidates = [Some(map_path(source)), stem_map_path(source), Some(written_map.clone())];
    let template = candidates.into_iter().flatten().find(|path| path.symlink_metadata().is_ok());
    let Some(template) = template else { return Ok(None) };

    let path = match written_map.symlink_metadata() {
        Ok(_) => resolve(&written_map)?,
        Err(_) => written_map,
    };
    let (format, replaced) = read_format(&template);
    let mode =
        std::fs::metadata(&template).map(|metadata| metadata.permissions().mode() & 0o7777).unwrap_or(0o644);

    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let temporary = tempfile::Builder::new()
        .prefix(".mender-preauth-")
        .suffix(".bmap.tmp")
        .tempfile_in(directory)
        .map_err(|source| BmapError::Io { path: path.clone(), source })?;
    Ok(Some(PendingMap { path, format, replaced, mode, temporary }))
}

/// Follows symbolic links to the map file to replace, which must be a regular file.
fn resolve(map: &Path) -> Result<PathBuf, BmapError> {
    let resolved = std::fs::canonicalize(map)
        .map_err(|source| BmapError::BrokenLink { path: map.to_path_buf(), source })?;
    let metadata =
        std::fs::metadata(&resolved).map_err(|source| BmapError::Io { path: map.to_path_buf(), source })?;
    if !metadata.is_file() {
        return Err(BmapError::NotAFile { path: map.to_path_buf() });
    }
    Ok(resolved)
}

/// Reads the format of the map at `path`. A map that cannot be read or parsed gives the default
/// format, with a warning naming the file.
fn read_format(path: &Path) -> (MapFormat, Option<String>) {
    let text = match read_map(path) {
        Ok(text) => text,
        Err(cause) => {
            log::warn!("{}: cannot read the old block map ({cause}); writing a new one", path.display());
            return (MapFormat::default(), None);
        }
    };
    match parse_format(&text) {
        Ok(OldFormat::Kept(format)) => (format, None),
        Ok(OldFormat::Replaced { description, block_size }) => {
            (MapFormat { block_size, ..MapFormat::default() }, Some(description))
        }
        Err(cause) => {
            log::warn!("{}: not a valid block map ({cause}); writing a new one", path.display());
            (MapFormat::default(), None)
        }
    }
}

fn read_map(path: &Path) -> Result<String, String> {
    let file = File::open(path).map_err(|error| error.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_MAP_LEN + 1).read_to_end(&mut bytes).map_err(|error| error.to_string())?;
    if bytes.len() as u64 > MAX_MAP_LEN {
        return Err(format!("larger than {MAX_MAP_LEN} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

impl PendingMap {
    /// Returns the path of the new map.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Builds the map of the image at `image` and puts it in place, all or nothing. Returns the
    /// number of mapped blocks and of all blocks.
    pub fn write(self, image: &Path) -> Result<(u64, u64), BmapError> {
        let image_error = |source| BmapError::Io { path: image.to_path_buf(), source };
        let file = File::open(image).map_err(image_error)?;
        let image_len = file.metadata().map_err(image_error)?.len();
        if image_len == 0 {
            return Err(BmapError::EmptyImage { path: image.to_path_buf() });
        }
        let ranges = mapped_ranges(&file, image_len, self.format.block_size).map_err(image_error)?;
        let text = render_map(&file, image_len, &ranges, self.format).map_err(image_error)?;

        let map_error = |source| BmapError::Io { path: self.path.clone(), source };
        let mut temporary = self.temporary;
        temporary.write_all(text.as_bytes()).map_err(map_error)?;
        temporary.as_file().set_permissions(std::fs::Permissions::from_mode(self.mode)).map_err(map_error)?;
        temporary.as_file().sync_all().map_err(map_error)?;
        temporary.persist(&self.path).map_err(|error| map_error(error.error))?;
        if let Some(old) = &self.replaced {
            log::info!(
                "{}: the old map was in {old}, which this tool does not write; wrote format {} with {} \
                 instead, which bmaptool 3.1 and later read",
                self.path.display(),
                self.format.version,
                self.format.checksum.name()
            );
        }
        let mapped = ranges.iter().map(|range| range.last - range.first + 1).sum();
        Ok((mapped, image_len.div_ceil(self.format.block_size)))
    }
}

/// Prepares the map of `written` unless `skip` (--no-bmap) is set; see [`prepare`].
/// A compressed `written` image gets no map: bmaptool maps the decompressed image, which this
/// tool does not write to disk.
pub fn prepare_unless(skip: bool, source: &Path, written: &Path) -> Result<Option<PendingMap>, BmapError> {
    if skip {
        return Ok(None);
    }
    if Compression::from_suffix(written).is_some() {
        for map in [Some(map_path(written)), stem_map_path(written)].into_iter().flatten() {
            if map.symlink_metadata().is_ok() {
                log::warn!(
                    "{}: left as it was, so it no longer matches {}: block maps are written only \
                     for uncompressed images (write an uncompressed --output, or run bmaptool create \
                     on the decompressed image)",
                    map.display(),
                    written.display()
                );
            }
        }
        return Ok(None);
    }
    prepare(source, written)
}

/// Writes a prepared map after the image `written` was written, and logs the result. The
/// image has changed by then, so the error message states that the old map no longer matches.
pub fn finish(pending: Option<PendingMap>, written: &Path) -> anyhow::Result<()> {
    let Some(pending) = pending else { return Ok(()) };
    let path = pending.path().to_path_buf();
    match pending.write(written) {
        Ok((mapped, blocks)) => {
            log::info!("{}: wrote the block map ({mapped} of {blocks} blocks hold data)", path.display());
            Ok(())
        }
        Err(error) => Err(anyhow::anyhow!(
            "{} was written, but its block map {} was not, so it no longer matches the image: {error}; \
             recreate it with `bmaptool create {} -o {}`",
            written.display(),
            path.display(),
            written.display(),
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP_2_0: &str = "<?xml version=\"1.0\" ?>\n<bmap version=\"2.0\">\n    <ImageSize> 821752 </ImageSize>\n    \
        <BlockSize> 4096 </BlockSize>\n    <BlocksCount> 201 </BlocksCount>\n    \
        <MappedBlocksCount> 117 </MappedBlocksCount>\n    <ChecksumType> sha256 </ChecksumType>\n</bmap>\n";

    #[test]
    fn format_2_0_with_sha256_is_kept() {
        let format = parse_format(MAP_2_0).unwrap();
        assert_eq!(
            format,
            OldFormat::Kept(MapFormat { version: "2.0", checksum: ChecksumType::Sha256, block_size: 4096 })
        );
    }

    #[test]
    fn format_1_4_with_sha512_is_kept() {
        let text = MAP_2_0.replace("\"2.0\"", "'1.4'").replace("sha256", "sha512");
        let format = parse_format(&text).unwrap();
        assert_eq!(
            format,
            OldFormat::Kept(MapFormat { version: "1.4", checksum: ChecksumType::Sha512, block_size: 4096 })
        );
    }

    #[test]
    fn format_1_3_and_sha1_are_replaced() {
        let text = MAP_2_0.replace("2.0", "1.3");
        assert_eq!(
            parse_format(&text).unwrap(),
            OldFormat::Replaced { description: "format 1.3 with SHA-1".to_string(), block_size: 4096 }
        );
        let text = MAP_2_0.replace("sha256", "md5");
        assert_eq!(
            parse_format(&text).unwrap(),
            OldFormat::Replaced { description: "format 2.0 with md5".to_string(), block_size: 4096 }
        );
    }

    #[test]
    fn malformed_maps_are_rejected() {
        assert!(parse_format("").is_err());
        assert!(parse_format("<bmap>").is_err());
        assert!(parse_format(&MAP_2_0.replace("2.0", "two")).is_err());
        assert!(parse_format(&MAP_2_0.replace("4096", "1000")).is_err());
        assert!(parse_format(&MAP_2_0.replace("4096", "0")).is_err());
        assert!(parse_format(&MAP_2_0.replace("<BlockSize>", "<Block>")).is_err());
        assert!(parse_format(&MAP_2_0.replace("ChecksumType", "Checksum")).is_err());
    }

    #[test]
    fn elements_named_in_comments_are_skipped() {
        let text = MAP_2_0.replace("<BlockSize>", "<!-- <MappedBlocksCount> blocks --> <BlockSize>");
        assert_eq!(parse_format(&text), parse_format(MAP_2_0));
        assert!(parse_format(MAP_2_0).is_ok());
    }

    #[test]
    fn maps_with_bad_counts_are_rejected() {
        let cases = [
            (MAP_2_0.replace("</bmap>", ""), "no closing </bmap> at the end"),
            (
                MAP_2_0.replace(" 821752 ", " -5 "),
                "invalid <ImageSize> \"-5\": expected a non-negative integer",
            ),
            (MAP_2_0.replace("<ImageSize>", "<Size>"), "no <ImageSize> element"),
            (MAP_2_0.replace("<bmap ", "<!-- <bmap "), "a comment without its closing -->"),
            (MAP_2_0.replace(" 201 ", " 200 "), "<BlocksCount> 200 does not match <ImageSize> 821752"),
            (
                MAP_2_0.replace(" 117 ", " 202 "),
                "<MappedBlocksCount> 202 is more than the image's 201 blocks",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_format(&text), Err(expected.to_string()), "{text}");
        }
    }

    #[test]
    fn compressed_image_map_is_named_after_the_uncompressed_image() {
        assert_eq!(
            stem_map_path(Path::new("deploy/core-image.sdimg.xz")).unwrap(),
            Path::new("deploy/core-image.sdimg.bmap")
        );
        assert_eq!(stem_map_path(Path::new("deploy/core-image.sdimg")), None);
    }

    #[test]
    fn map_path_appends_suffix() {
        assert_eq!(map_path(Path::new("deploy/core-image.sdimg")), Path::new("deploy/core-image.sdimg.bmap"));
    }

    #[test]
    fn ranges_cover_data_and_partial_last_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        let file = File::create(&path).unwrap();
        let len = 64 * 1024 * 1024 + 100;
        file.set_len(len).unwrap();
        file.write_all_at(b"start", 0).unwrap();
        file.write_all_at(b"end", len - 3).unwrap();
        file.sync_all().unwrap();
        let file = File::open(&path).unwrap();

        let ranges = mapped_ranges(&file, len, 4096).unwrap();

        assert_eq!(ranges.first().unwrap().first, 0);
        assert_eq!(ranges.last().unwrap().last, len.div_ceil(4096) - 1);
        let text = render_map(&file, len, &ranges, MapFormat::default()).unwrap();
        assert!(text.contains(&format!("<BlocksCount> {} </BlocksCount>", len.div_ceil(4096))));
    }

    #[test]
    fn file_checksum_covers_map_with_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let file = File::open(&path).unwrap();
        let ranges = [BlockRange { first: 0, last: 2 }];

        let text = render_map(&file, 10_000, &ranges, MapFormat::default()).unwrap();

        let stored = element_text(&text, "BmapFileChecksum").unwrap().to_string();
        let zeroed = text.replace(&stored, &"0".repeat(64));
        assert_eq!(stored, hex(&Sha256::digest(zeroed.as_bytes())));
        let range_checksum = hex(&Sha256::digest(vec![7u8; 10_000]));
        assert!(text.contains(&format!("<Range chksum=\"{range_checksum}\"> 0-2 </Range>")));
    }
}
