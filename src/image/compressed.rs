//! Compressed disk images (`.sdimg.gz`, `.xz`, `.zst`, `.bz2`): detecting the format by its
//! magic bytes, reading the decompressed bytes by offset without writing them to disk, and
//! writing an image compressed or decompressed.
//!
//! The formats are specified in RFC 1952 (gzip), "The .xz File Format" of the XZ Utils project
//! (xz), RFC 8878 (Zstandard) and, for bzip2, which has no formal specification, by its
//! reference implementation, Julian Seward's bzip2/libbzip2. Every decoder reads concatenated
//! members and streams to the end, as pigz, `xz -T` and Yocto produce them.
//!
//! A decompressor only reads forward. [`CompressedImage`] decompresses the whole stream once when
//! it is opened, because gzip and bzip2 do not record the decompressed length (gzip's ISIZE is
//! modulo 2^32 and per member). That pass notes which chunks are all zero and keeps non-zero
//! chunks in a cache of at most [`CACHE_BUDGET`] bytes, evicting the least recently used. A later
//! read of an evicted chunk decompresses forward from where the decoder is, or from the start
//! when the chunk lies behind it, so memory stays bounded whatever the image size.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::image::volume::ReadAt;

/// Bytes per cached chunk of decompressed data.
const CHUNK_LEN: usize = 64 * 1024;

/// Maximum number of bytes of decompressed non-zero chunks kept in memory. Together with the
/// decoder's own state and one bit per chunk for the zero map, this bounds the memory a read
/// takes. NOTE: the decoder's state is set by the file: 64 MiB for the dictionary of `xz -9`,
/// the largest preset, and up to 1.5 GiB for a custom xz dictionary, which liblzma accepts.
pub const CACHE_BUDGET: usize = 128 * 1024 * 1024;

/// A compression format of an image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    Bzip2,
}

impl Compression {
    /// Every format, in the order their magic bytes are checked.
    pub const ALL: [Compression; 4] =
        [Compression::Gzip, Compression::Xz, Compression::Zstd, Compression::Bzip2];

    /// The format whose magic bytes `start` begins with. The magic numbers are those of the
    /// format specifications: 1F 8B (gzip), FD '7zXZ' 00 (xz), 28 B5 2F FD (zstd frame) and
    /// 'BZh' followed by the block size digit 1-9 (bzip2).
    pub fn detect(start: &[u8]) -> Option<Compression> {
        if start.starts_with(&[0x1F, 0x8B]) {
            return Some(Compression::Gzip);
        }
        if start.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
            return Some(Compression::Xz);
        }
        if start.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
            return Some(Compression::Zstd);
        }
        if let [b'B', b'Z', b'h', level, ..] = start
            && (b'1'..=b'9').contains(level)
        {
            return Some(Compression::Bzip2);
        }
        None
    }

    /// Reads the first bytes of `file` and returns its format, or `None` for an uncompressed file.
    pub fn detect_file(file: &File) -> io::Result<Option<Compression>> {
        let mut start = [0u8; 6];
        let mut filled = 0;
        while filled < start.len() {
            match file.read_at(&mut start[filled..], filled as u64)? {
                0 => break,
                read => filled += read,
            }
        }
        Ok(Compression::detect(&start[..filled]))
    }

    /// The format that the file name's suffix selects (`.gz`, `.xz`, `.zst`, `.bz2`), or
    /// `None` for any other name, which means an uncompressed image.
    pub fn from_suffix(path: &Path) -> Option<Compression> {
        let extension = path.extension()?.to_str()?;
        Compression::ALL.into_iter().find(|compression| compression.suffix() == extension)
    }

    /// The usual file name suffix of the format, without the dot.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Gzip => "gz",
            Compression::Xz => "xz",
            Compression::Zstd => "zst",
            Compression::Bzip2 => "bz2",
        }
    }

    /// Name of the format in messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
        }
    }

    /// A decoder that reads every member or stream of `input` to the end.
    fn decoder(self, file: File) -> io::Result<Box<dyn Read + Send>> {
        let input = io::BufReader::with_capacity(CHUNK_LEN, FileFromStart { file, offset: 0 });
        Ok(match self {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
            Compression::Zstd => {
                let mut decoder = zstd::stream::read::Decoder::with_buffer(input)?;
                decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                Box::new(decoder)
            }
            Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
        })
    }

    /// Compresses all of `input` into `output` at the format's default level (gzip 6, xz 6,
    /// zstd 3, bzip2 9, as their command-line tools use).
    pub fn compress(self, input: &mut dyn Read, output: File) -> io::Result<File> {
        let output = io::BufWriter::with_capacity(CHUNK_LEN, output);
        let output = match self {
            Compression::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::default());
                io::copy(input, &mut encoder)?;
                encoder.finish()?
            }
            Compression::Xz => {
                let mut encoder = liblzma::write::XzEncoder::new(output, 6);
                io::copy(input, &mut encoder)?;
                encoder.finish()?
            }
            Compression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(output, zstd::DEFAULT_COMPRESSION_LEVEL)?;
                io::copy(input, &mut encoder)?;
                encoder.finish()?
            }
            Compression::Bzip2 => {
                let mut encoder = bzip2::write::BzEncoder::new(output, bzip2::Compression::default());
                io::copy(input, &mut encoder)?;
                encoder.finish()?
            }
        };
        output.into_inner().map_err(io::IntoInnerError::into_error)
    }
}

/// Base-2 logarithm of the largest zstd window decoded: 2^27 bytes (128 MiB), libzstd's default
/// limit (`ZSTD_WINDOWLOG_LIMIT_DEFAULT`), which `zstd -d` also keeps unless given `--long=N`.
/// Frames written with `zstd --long=28` or more need more memory than this.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// The message libzstd gives (`ZSTD_getErrorName`) for a frame whose window exceeds the limit.
const ZSTD_WINDOW_TOO_LARGE: &str = "Frame requires too much memory for decoding";

/// Failure to decompress an image, with the format and the decoder's cause.
fn decode_error(compression: Compression, source: io::Error) -> io::Error {
    if compression == Compression::Zstd && source.to_string() == ZSTD_WINDOW_TOO_LARGE {
        let max_mib = (1u64 << ZSTD_WINDOW_LOG_MAX) >> 20;
        return io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "zstd data needs a window larger than {max_mib} MiB (--long={ZSTD_WINDOW_LOG_MAX}), the \
                 most this tool decodes; decompress it with `zstd -d --long=31` first"
            ),
        );
    }
    let cause = if source.kind() == io::ErrorKind::UnexpectedEof {
        "the compressed data ends early (truncated file?)".to_string()
    } else {
        source.to_string()
    };
    io::Error::new(io::ErrorKind::InvalidData, format!("{} data is corrupt: {cause}", compression.name()))
}

/// A chunk of zeros, to compare decoded chunks with.
static ZEROS: [u8; CHUNK_LEN] = [0; CHUNK_LEN];

/// Returns true when every byte of `data`, at most one chunk, is zero.
fn is_zero(data: &[u8]) -> bool {
    data == &ZEROS[..data.len()]
}

/// Reads up to `buf.len()` bytes, stopping early only at the end of the stream. Returns the
/// number of bytes read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// A failure of [`decompress_sparse`], split by the file at fault so that the message names it.
#[derive(Debug)]
pub enum SparseDecompressError {
    /// Reading or decoding the compressed input failed.
    Input(io::Error),
    /// Writing the decompressed output failed, such as when its disk is full.
    Output(io::Error),
}

/// Decompresses all of `input` into the empty file `output`, leaving holes where whole chunks
/// are zero, and syncs it. Returns the decompressed length.
pub fn decompress_sparse(
    input: &File,
    compression: Compression,
    output: &File,
) -> Result<u64, SparseDecompressError> {
    let input = input.try_clone().map_err(SparseDecompressError::Input)?;
    let mut decoder = compression.decoder(input).map_err(SparseDecompressError::Input)?;
    let mut chunk = vec![0u8; CHUNK_LEN];
    let mut offset = 0u64;
    loop {
        let read = read_full(&mut decoder, &mut chunk)
            .map_err(|error| SparseDecompressError::Input(decode_error(compression, error)))?;
        if read == 0 {
            break;
        }
        let data = &chunk[..read];
        if !is_zero(data) {
            output.write_all_at(data, offset).map_err(SparseDecompressError::Output)?;
        }
        offset += read as u64;
    }
    output.set_len(offset).map_err(SparseDecompressError::Output)?;
    output.sync_all().map_err(SparseDecompressError::Output)?;
    Ok(offset)
}

/// Compresses all of `input` into `output` as `compression`, and syncs it.
pub fn compress_file(input: &File, compression: Compression, output: File) -> io::Result<()> {
    let mut reader =
        io::BufReader::with_capacity(CHUNK_LEN, FileFromStart { file: input.try_clone()?, offset: 0 });
    let output = compression.compress(&mut reader, output)?;
    output.sync_all()
}

/// The decompressed bytes of a compressed image file, read by offset.
#[derive(Debug)]
pub struct CompressedImage {
    path: PathBuf,
    compression: Compression,
    len: u64,
    state: Mutex<DecodeState>,
}

/// Decoder position, zero map and cache of non-zero chunks.
struct DecodeState {
    input: File,
    compression: Compression,
    decoder: Box<dyn Read + Send>,
    /// The chunk being decoded.
    buffer: Vec<u8>,
    /// Index of the next chunk the decoder returns.
    next_chunk: u64,
    /// One bit per chunk, set for a chunk whose bytes are all zero.
    zero_chunks: Vec<u64>,
    cache: ChunkCache,
    /// Number of times decoding went back to the start of the file, for the debug log.
    restarts: u64,
}

impl std::fmt::Debug for DecodeState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DecodeState")
            .field("next_chunk", &self.next_chunk)
            .field("cached_bytes", &self.cache.bytes())
            .field("restarts", &self.restarts)
            .finish()
    }
}

/// Non-zero chunks kept in memory in two tiers, each evicting its least recently used chunk
/// first. Chunks a reader requested (superblocks, inode tables, directories) go to the
/// `requested` tier. Decoding past hundreds of MiB of file data fills only the `passed` tier,
/// so it does not push them out.
struct ChunkCache {
    requested: LruChunks,
    passed: LruChunks,
}

impl Default for ChunkCache {
    fn default() -> Self {
        ChunkCache {
            requested: LruChunks::new(REQUESTED_BUDGET),
            passed: LruChunks::new(CACHE_BUDGET - REQUESTED_BUDGET),
        }
    }
}

/// Number of chunks at the start of an image kept as if requested: 1 MiB, which contains the
/// MBR, or the protective MBR and the primary GPT header with its usual 16 KiB entry array.
const TABLE_CHUNKS: u64 = (1024 * 1024 / CHUNK_LEN) as u64;

/// Part of [`CACHE_BUDGET`] kept for chunks that readers asked for.
const REQUESTED_BUDGET: usize = CACHE_BUDGET / 4;

impl ChunkCache {
    /// Returns chunk `index` for a reader, moving it to the `requested` tier.
    fn get(&mut self, index: u64) -> Option<&[u8]> {
        if let Some(data) = self.passed.remove(index) {
            self.requested.insert(index, data);
        }
        self.requested.get(index)
    }

    /// Keeps a chunk that the decoder passed. The chunks of the first [`TABLE_CHUNKS`] go to
    /// the `requested` tier, because every command reads the partition table there first.
    fn insert_passed(&mut self, index: u64, data: Vec<u8>) {
        if index < TABLE_CHUNKS {
            self.requested.insert(index, data);
        } else if !self.requested.contains(index) {
            self.passed.insert(index, data);
        }
    }

    fn bytes(&self) -> usize {
        self.requested.bytes + self.passed.bytes
    }
}

/// Chunks up to a byte budget, evicted least recently used first.
struct LruChunks {
    budget: usize,
    chunks: HashMap<u64, (Vec<u8>, u64)>,
    /// Chunk indices by the tick of their last use.
    by_use: BTreeMap<u64, u64>,
    tick: u64,
    bytes: usize,
}

impl LruChunks {
    fn new(budget: usize) -> Self {
        LruChunks { budget, chunks: HashMap::new(), by_use: BTreeMap::new(), tick: 0, bytes: 0 }
    }

    fn contains(&self, index: u64) -> bool {
        self.chunks.contains_key(&index)
    }

    fn get(&mut self, index: u64) -> Option<&[u8]> {
        self.tick += 1;
        let tick = self.tick;
        let (data, last_use) = self.chunks.get_mut(&index)?;
        self.by_use.remove(last_use);
        *last_use = tick;
        self.by_use.insert(tick, index);
        Some(data)
    }

    fn remove(&mut self, index: u64) -> Option<Vec<u8>> {
        let (data, last_use) = self.chunks.remove(&index)?;
        self.by_use.remove(&last_use);
        self.bytes -= data.len();
        Some(data)
    }

    fn insert(&mut self, index: u64, data: Vec<u8>) {
        self.remove(index);
        while self.bytes + data.len() > self.budget {
            let Some((_, oldest)) = self.by_use.pop_first() else { break };
            if let Some((evicted, _)) = self.chunks.remove(&oldest) {
                self.bytes -= evicted.len();
            }
        }
        self.tick += 1;
        self.bytes += data.len();
        self.by_use.insert(self.tick, index);
        self.chunks.insert(index, (data, self.tick));
    }
}

impl CompressedImage {
    /// Decompresses `file` once to learn its decompressed length and zero chunks, filling the
    /// cache on the way. A corrupt or truncated file is an `InvalidData` error.
    pub fn open(path: &Path, file: &File, compression: Compression) -> io::Result<Self> {
        let input = file.try_clone()?;
        let decoder = compression.decoder(input.try_clone()?)?;
        let mut state = DecodeState {
            input,
            compression,
            decoder,
            buffer: vec![0u8; CHUNK_LEN],
            next_chunk: 0,
            zero_chunks: Vec::new(),
            cache: ChunkCache::default(),
            restarts: 0,
        };
        let len = state.decode_to_end()?;
        log::debug!(
            "{}: {} image of {len} bytes decompressed; {} bytes of non-zero chunks cached",
            path.display(),
            compression.name(),
            state.cache.bytes()
        );
        Ok(CompressedImage { path: path.to_path_buf(), compression, len, state: Mutex::new(state) })
    }

    /// The format of the file.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Length of the decompressed image in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Returns true for an image that decompresses to nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn read_chunks(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut state = self.state.lock().map_err(|_| io::Error::other("decoder state is poisoned"))?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let index = at / CHUNK_LEN as u64;
            let within = (at % CHUNK_LEN as u64) as usize;
            let take = (CHUNK_LEN - within).min(buf.len() - done);
            let target = &mut buf[done..done + take];
            if state.is_zero(index) {
                target.fill(0);
            } else {
                let chunk = state.chunk(index, &self.path)?;
                target.copy_from_slice(&chunk[within..within + take]);
            }
            done += take;
        }
        Ok(())
    }
}

impl ReadAt for CompressedImage {
    fn read_image_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "range of {} bytes at offset {offset} is past the end of the decompressed image ({} bytes)",
                    buf.len(),
                    self.len
                ),
            ));
        }
        self.read_chunks(buf, offset)
    }

    fn image_len(&self) -> io::Result<u64> {
        Ok(self.len)
    }

    fn write_image_at(&self, _data: &[u8], _offset: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("a {} image cannot be changed in place", self.compression.name()),
        ))
    }
}

impl DecodeState {
    fn is_zero(&self, index: u64) -> bool {
        let word = (index / 64) as usize;
        self.zero_chunks.get(word).is_some_and(|bits| bits & (1 << (index % 64)) != 0)
    }

    fn mark_zero(&mut self, index: u64) {
        let word = (index / 64) as usize;
        if self.zero_chunks.len() <= word {
            self.zero_chunks.resize(word + 1, 0);
        }
        self.zero_chunks[word] |= 1 << (index % 64);
    }

    /// Decodes the next chunk, recording it as zero or caching it. Returns its length, 0 at the
    /// end of the stream.
    fn decode_next(&mut self) -> io::Result<usize> {
        let compression = self.compression;
        let read = read_full(&mut self.decoder, &mut self.buffer)
            .map_err(|error| decode_error(compression, error))?;
        if read == 0 {
            return Ok(0);
        }
        let chunk = &self.buffer[..read];
        let index = self.next_chunk;
        if is_zero(chunk) {
            self.mark_zero(index);
        } else {
            self.cache.insert_passed(index, chunk.to_vec());
        }
        self.next_chunk += 1;
        Ok(read)
    }

    fn decode_to_end(&mut self) -> io::Result<u64> {
        let mut len = 0u64;
        loop {
            let read = self.decode_next()?;
            if read == 0 {
                return Ok(len);
            }
            len += read as u64;
        }
    }

    /// Returns the non-zero chunk `index`, decoding forward to it, from the start of the file
    /// when it lies behind the decoder.
    fn chunk(&mut self, index: u64, path: &Path) -> io::Result<&[u8]> {
        if self.cache.get(index).is_none() {
            if index < self.next_chunk {
                self.restart()?;
                log::debug!("{}: decompressing again from the start for chunk {index}", path.display());
            }
            while self.next_chunk <= index {
                if self.decode_next()? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the compressed file changed while it was read",
                    ));
                }
            }
        }
        self.cache.get(index).ok_or_else(|| io::Error::other("decompressed chunk was not kept"))
    }

    fn restart(&mut self) -> io::Result<()> {
        self.decoder = self.compression.decoder(self.input.try_clone()?)?;
        self.next_chunk = 0;
        self.restarts += 1;
        Ok(())
    }
}

/// Reads a file from the start through `pread`, so that each decoder has its own position
/// although the decoders of one image share the open file.
struct FileFromStart {
    file: File,
    offset: u64,
}

impl Read for FileFromStart {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read_at(buf, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_name_the_format() {
        assert_eq!(Compression::detect(&[0x1F, 0x8B, 8, 0]), Some(Compression::Gzip));
        assert_eq!(Compression::detect(b"\xFD7zXZ\0"), Some(Compression::Xz));
        assert_eq!(Compression::detect(&[0x28, 0xB5, 0x2F, 0xFD, 0]), Some(Compression::Zstd));
        assert_eq!(Compression::detect(b"BZh91AY"), Some(Compression::Bzip2));
        assert_eq!(Compression::detect(b"BZh0"), None);
        assert_eq!(Compression::detect(&[0u8; 6]), None);
        assert_eq!(Compression::detect(&[]), None);
    }

    #[test]
    fn suffix_selects_the_output_format() {
        assert_eq!(Compression::from_suffix(Path::new("a.sdimg.gz")), Some(Compression::Gzip));
        assert_eq!(Compression::from_suffix(Path::new("a.sdimg.zst")), Some(Compression::Zstd));
        assert_eq!(Compression::from_suffix(Path::new("a.sdimg")), None);
        assert_eq!(Compression::from_suffix(Path::new("gz")), None);
    }

    fn compressed(compression: Compression, data: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        compression.compress(&mut &data[..], file.reopen().unwrap()).unwrap();
        file
    }

    fn patterned(len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        for (index, byte) in data.iter_mut().enumerate() {
            // Zero runs of whole chunks between runs of data, so both kinds of chunk occur.
            if (index / CHUNK_LEN) % 3 != 1 {
                *byte = (index % 251) as u8;
            }
        }
        data
    }

    #[test]
    fn reads_match_the_data_in_any_order() {
        let data = patterned(10 * CHUNK_LEN + 123);
        for compression in Compression::ALL {
            let file = compressed(compression, &data);
            let image = CompressedImage::open(file.path(), file.as_file(), compression).unwrap();
            assert_eq!(image.len(), data.len() as u64);
            for offset in [8 * CHUNK_LEN as u64 + 7, 0, 5 * CHUNK_LEN as u64 - 3, 100] {
                let mut buf = vec![0u8; CHUNK_LEN + 100];
                image.read_image_at(&mut buf, offset).unwrap();
                let start = offset as usize;
                assert_eq!(buf, &data[start..start + buf.len()], "{compression:?} at {offset}");
            }
        }
    }

    #[test]
    fn evicted_chunk_is_decoded_again() {
        let data = patterned(6 * CHUNK_LEN);
        let file = compressed(Compression::Gzip, &data);
        let image = CompressedImage::open(file.path(), file.as_file(), Compression::Gzip).unwrap();
        image.state.lock().unwrap().cache = ChunkCache::default();

        let mut buf = vec![0u8; 100];
        image.read_image_at(&mut buf, 5 * CHUNK_LEN as u64).unwrap();
        image.read_image_at(&mut buf, 0).unwrap();

        assert_eq!(buf, &data[..100]);
        assert_eq!(image.state.lock().unwrap().restarts, 1);
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let data = patterned(4 * CHUNK_LEN);
        for compression in Compression::ALL {
            let file = compressed(compression, &data);
            let len = file.as_file().metadata().unwrap().len();
            file.as_file().set_len(len / 2).unwrap();

            let error = CompressedImage::open(file.path(), file.as_file(), compression).unwrap_err();

            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{compression:?}: {error}");
        }
    }

    #[test]
    fn concatenated_members_are_all_read() {
        let first = patterned(CHUNK_LEN + 10);
        let second = vec![7u8; 3000];
        for compression in Compression::ALL {
            let one = compressed(compression, &first);
            let two = compressed(compression, &second);
            let mut joined = std::fs::read(one.path()).unwrap();
            joined.extend(std::fs::read(two.path()).unwrap());
            std::fs::write(one.path(), &joined).unwrap();

            let image = CompressedImage::open(one.path(), one.as_file(), compression).unwrap();

            assert_eq!(image.len(), (first.len() + second.len()) as u64, "{compression:?}");
            let mut tail = vec![0u8; second.len()];
            image.read_image_at(&mut tail, first.len() as u64).unwrap();
            assert_eq!(tail, second);
        }
    }
}
