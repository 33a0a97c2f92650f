//! Corruption tests: images from mkfs.ext4 with single fields broken, and randomly mutated
//! metadata. Every case must end in an error, never a panic.

use std::path::Path;
use std::process::Command;

use super::block_group::BlockGroupIndex;
use super::bytes::{read_u16le, write_u16le, write_u32le};
use super::checksum::crc32c;
use super::inode::InodeIndex;
use super::{Ext, ExtError, NewAttrs};
use crate::image::volume::{Staged, Volume};
use crate::test_support::require_tools;

const ATTRS: NewAttrs = NewAttrs { mode: 0o600, uid: 0, gid: 0, time: 1_700_000_000 };

/// Builds an image with `mkfs.ext4 args -d source` and returns its bytes.
pub(super) fn image_bytes(size_kib: u64, args: &[&str], populate: impl FnOnce(&Path)) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    populate(&source);
    let image = dir.path().join("image");
    std::fs::File::create(&image).unwrap().set_len(size_kib << 10).unwrap();
    let output = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "root_owner=0:0"])
        .args(args)
        .arg("-d")
        .arg(&source)
        .arg(&image)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::read(image).unwrap()
}

pub(super) fn one_file(source: &Path) {
    std::fs::create_dir(source.join("dir")).unwrap();
    std::fs::write(source.join("dir/file"), vec![7u8; 5000]).unwrap();
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, ExtError>, structure_part: &str) {
    match result {
        Err(ExtError::Corrupt { ref structure, .. }) if structure.contains(structure_part) => {}
        other => panic!("expected corruption of {structure_part:?}, got {other:?}"),
    }
}

/// Recomputes the superblock checksum after a test changed a field.
fn reseal_superblock(image: &mut [u8]) {
    let checksum = crc32c(!0, &image[1024..1024 + 0x3FC]);
    write_u32le(&mut image[1024..2048], 0x3FC, checksum);
}

#[test]
fn bad_magic_is_corrupt() {
    if require_tools(&["mkfs.ext4"], "bad_magic_is_corrupt").is_none() {
        return;
    }
    let mut image = image_bytes(4096, &[], one_file);
    write_u16le(&mut image, 1024 + 0x38, 0x1234);
    assert_corrupt(Ext::open(image), "superblock");
}

#[test]
fn huge_inode_count_is_corrupt() {
    if require_tools(&["mkfs.ext4"], "huge_inode_count_is_corrupt").is_none() {
        return;
    }
    let mut image = image_bytes(4096, &[], one_file);
    write_u32le(&mut image, 1024, u32::MAX);
    reseal_superblock(&mut image);
    assert_corrupt(Ext::open(image), "superblock");
}

/// A volume in memory that counts the bytes read from it.
#[derive(Debug)]
struct CountingVolume {
    bytes: Vec<u8>,
    read: std::cell::Cell<u64>,
}

impl Volume for CountingVolume {
    fn len(&self) -> u64 {
        Volume::len(&self.bytes)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.read.set(self.read.get() + buf.len() as u64);
        self.bytes.read_at(offset, buf)
    }
}

#[test]
fn oversized_descriptor_table_fails_early() {
    if require_tools(&["mkfs.ext4"], "oversized_descriptor_table_fails_early").is_none() {
        return;
    }
    // 16384 blocks in groups of 8 blocks: 2048 descriptors of 32 bytes fill 64 blocks.
    let mut image =
        image_bytes(16384, &["-b", "1024", "-O", "^metadata_csum,^flex_bg,^resize_inode"], one_file);
    write_u32le(&mut image, 1024 + 0x20, 8);
    write_u32le(&mut image, 1024 + 0x24, 8);
    write_u32le(&mut image, 1024 + 0x28, 8);
    write_u32le(&mut image, 1024, 2048 * 8);
    reseal_superblock(&mut image);

    let volume = CountingVolume { bytes: image, read: std::cell::Cell::new(0) };
    let error = Ext::open(&volume).unwrap_err();
    assert!(error.to_string().contains("run past the group's last block"), "{error}");
    assert_corrupt::<()>(Err(error), "superblock");
    assert!(volume.read.get() <= 4096, "read {} bytes", volume.read.get());
}

#[test]
fn unknown_incompat_feature_is_unsupported() {
    if require_tools(&["mkfs.ext4"], "unknown_incompat_feature_is_unsupported").is_none() {
        return;
    }
    let mut image = image_bytes(4096, &[], one_file);
    let incompat = super::bytes::read_u32le(&image, 1024 + 0x60);
    write_u32le(&mut image, 1024 + 0x60, incompat | 1 << 28);
    reseal_superblock(&mut image);
    match Ext::open(image) {
        Err(ExtError::Unsupported { feature, .. }) => assert_eq!(feature, "FEATURE_I28"),
        other => panic!("expected an unsupported feature, got {other:?}"),
    }
}

#[test]
fn extent_past_the_end_is_corrupt() {
    if require_tools(&["mkfs.ext4"], "extent_past_the_end_is_corrupt").is_none() {
        return;
    }
    for args in [&[][..], &["-O", "^metadata_csum"][..]] {
        let image = image_bytes(4096, args, one_file);
        let mut ext = Ext::open(image).unwrap();
        let ino = ext.lookup("/dir/file").unwrap().unwrap();
        let mut inode = ext.read_inode(ino).unwrap();
        let mut area = [0u8; 60];
        area.copy_from_slice(inode.block_area());
        // The first extent's start block lives 12 bytes into the entry after the header.
        write_u32le(&mut area, 12 + 8, (ext.sb.blocks_count + 10) as u32);
        inode.set_block_area(&area);
        let offset = ext.inode_offset(ino).unwrap() as usize;
        let bytes = inode.encode(&ext.sb).to_vec();
        ext.volume[offset..offset + bytes.len()].copy_from_slice(&bytes);

        let ext = Ext::open(ext.into_volume()).unwrap();
        assert_corrupt(ext.read_file(ino, 1 << 20), "extent root");
        let mut staged = Ext::open(Staged::new(ext.into_volume())).unwrap();
        assert_corrupt(staged.remove_file("/dir/file", 1), "extent root");
        assert_eq!(staged.volume().pending_bytes(), 0);
    }
}

#[test]
fn dirent_overrunning_its_block_is_corrupt() {
    if require_tools(&["mkfs.ext4"], "dirent_overrunning_its_block_is_corrupt").is_none() {
        return;
    }
    let image = image_bytes(4096, &[], one_file);
    let mut ext = Ext::open(image).unwrap();
    let dir = ext.read_inode(ext.lookup("/dir").unwrap().unwrap()).unwrap();
    let block = ext.file_map(&dir).unwrap().runs[0].physical;
    let start = (block * u64::from(ext.sb.block_size)) as usize;
    // "." is 12 bytes: give it a record length that runs past the end of the block.
    write_u16le(&mut ext.volume, start + 4, 2048);
    let ext = Ext::open(ext.into_volume()).unwrap();
    assert_corrupt(ext.lookup("/dir/file"), "directory inode");
}

#[test]
fn changed_inode_fails_its_checksum() {
    if require_tools(&["mkfs.ext4"], "changed_inode_fails_its_checksum").is_none() {
        return;
    }
    let image = image_bytes(4096, &[], one_file);
    let mut ext = Ext::open(image).unwrap();
    let ino = ext.lookup("/dir/file").unwrap().unwrap();
    let offset = ext.inode_offset(ino).unwrap() as usize;
    ext.volume[offset + 0x10] ^= 0xFF;
    assert_corrupt(ext.metadata(ino), &format!("inode {ino}"));
}

#[test]
fn free_count_disagreeing_with_bitmap_blocks_writes() {
    if require_tools(&["mkfs.ext4"], "free_count_disagreeing_with_bitmap_blocks_writes").is_none() {
        return;
    }
    let image = image_bytes(4096, &[], one_file);
    let mut ext = Ext::open(image).unwrap();
    let group = BlockGroupIndex(0);
    let (block, offset) = super::block_group::descriptor_location(&ext.sb, group);
    let mut descriptor = ext.groups[0].clone();
    descriptor.free_blocks_count -= 5;
    let bytes = descriptor.encode(&ext.sb, group).to_vec();
    let at = (block * u64::from(ext.sb.block_size)) as usize + offset;
    ext.volume[at..at + bytes.len()].copy_from_slice(&bytes);

    let mut ext = Ext::open(Staged::new(ext.into_volume())).unwrap();
    assert_corrupt(ext.write_file("/new", b"data", &ATTRS), "block bitmap of group 0");
    assert_eq!(ext.volume().pending_bytes(), 0);
}

/// A small xorshift generator, so that failures repeat.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Reads everything reachable and tries every write; results are ignored, panics are not.
fn exercise(image: Vec<u8>) {
    let Ok(mut ext) = Ext::open(Staged::new(image)) else { return };
    let mut pending = vec![(InodeIndex::ROOT, 0)];
    let mut visited = std::collections::HashSet::new();
    while let Some((ino, depth)) = pending.pop() {
        if depth > 6 || !visited.insert(ino) || visited.len() > 200 {
            continue;
        }
        let _ = ext.metadata(ino);
        let _ = ext.read_file(ino, 1 << 20);
        let _ = ext.read_link(ino);
        let mut buf = [0u8; 100];
        let _ = ext.read_at(ino, 4000, &mut buf);
        if let Ok(entries) = ext.read_dir(ino) {
            pending.extend(entries.into_iter().map(|entry| (entry.inode, depth + 1)));
        }
    }
    let _ = ext.resolve("/dir/../dir/./file", true);
    let _ = ext.write_file("/new", &[5u8; 3000], &ATTRS);
    let _ = ext.create_dir("/made", &ATTRS);
    let _ = ext.write_file("/dir/file", &[6u8; 20_000], &ATTRS);
    let _ = ext.remove_file("/dir/link", 1);
    let _ = ext.remove_file("/dir/file", 1);
    let _ = ext.write_file("/dir/new", &[7u8; 100], &ATTRS);
}

#[test]
fn mutated_metadata_never_panics() {
    if require_tools(&["mkfs.ext4"], "mutated_metadata_never_panics").is_none() {
        return;
    }
    let populate = |source: &Path| {
        one_file(source);
        std::fs::write(source.join("dir/small"), b"small").unwrap();
        std::os::unix::fs::symlink("/dir/file", source.join("dir/link")).unwrap();
        for index in 0..40 {
            std::fs::write(source.join(format!("dir/entry-{index}")), format!("{index}")).unwrap();
        }
    };
    let variants: [&[&str]; 2] = [
        &["-b", "1024", "-N", "128", "-I", "128", "-O", "^has_journal,^metadata_csum,^resize_inode"],
        &["-b", "1024", "-N", "128", "-O", "^has_journal,^resize_inode"],
    ];
    let mut random = Xorshift(0x9E37_79B9_7F4A_7C15);
    for args in variants {
        let image = image_bytes(2048, args, populate);
        // Metadata and the populated files all lie in the first 200 KiB.
        let region = 200 * 1024;
        for _ in 0..150 {
            let mut mutated = image.clone();
            let flips = 1 + random.next() % 6;
            for _ in 0..flips {
                let at = 1024 + (random.next() % (region - 1024)) as usize;
                mutated[at] = random.next() as u8;
            }
            exercise(mutated);
        }
        assert!(Volume::len(&image) > region);
        assert_eq!(read_u16le(&image, 1024 + 0x38), 0xEF53);
    }
}
