//! Property test of the ext writer: random sequences of operations on fresh images across the
//! feature matrix, applied both to the filesystem and to an in-memory model. After each
//! sequence `e2fsck -fn` must report nothing, and the tree read back by the independent
//! `ext4-view` crate and by `debugfs` must match the model: names, kinds, modes, owners,
//! times, sizes, contents, symbolic link targets and which names share an inode.
//!
//! The default run covers every feature set twice. `MENDER_PREAUTH_PROPTEST_CASES=N` runs N
//! cases, cycling through the feature sets; `MENDER_PREAUTH_PROPTEST_SEED=S` starts from seed
//! S, which a failure prints.

mod ext_support;

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use ext_support::*;
use mender_preauth::fs::ext::{Ext, ExtError, NewAttrs, SetAttrs};
use mender_preauth::image::volume::Staged;

/// Feature sets, as extra `mkfs.ext4` arguments, with the image size in MiB. Every set makes
/// several block groups so that allocation crosses group boundaries.
const MATRIX: &[(&str, u64, &[&str])] = &[
    ("ext4 4k", 32, &["-b", "4096", "-g", "2048"]),
    ("ext4 1k", 24, &["-b", "1024"]),
    // ext4-view 1.0 rejects 128-byte inodes under metadata_csum, which have no room for the
    // high checksum half, so this set goes without metadata_csum.
    ("ext4 2k 128-byte inodes", 24, &["-b", "2048", "-I", "128", "-g", "4096", "-O", "^metadata_csum"]),
    ("ext4 1k 32-bit no flex_bg", 24, &["-b", "1024", "-O", "^64bit,^flex_bg"]),
    ("ext4 1k uninit_bg", 24, &["-b", "1024", "-O", "^metadata_csum,uninit_bg"]),
    ("ext4 1k metadata_csum_seed", 24, &["-b", "1024", "-O", "metadata_csum_seed"]),
    ("ext4 1k sparse_super2", 24, &["-b", "1024", "-O", "^resize_inode,sparse_super2"]),
    ("ext4 1k no sparse_super", 24, &["-b", "1024", "-O", "^sparse_super,^resize_inode"]),
    ("ext4 1k no huge_file no extra_isize", 24, &["-b", "1024", "-O", "^huge_file,^extra_isize"]),
    ("ext4 1k inline_data", 24, &["-b", "1024", "-O", "inline_data"]),
    ("ext4 1k no journal no csum", 24, &["-b", "1024", "-O", "^has_journal,^metadata_csum"]),
    ("ext4 1k orphan_file", 24, &["-b", "1024", "-O", "orphan_file"]),
    ("ext4 1k large_dir", 24, &["-b", "1024", "-O", "large_dir"]),
    ("ext4 1k no dir_index", 24, &["-b", "1024", "-O", "^dir_index"]),
    ("ext4 4k meta_bg", 32, &["-b", "4096", "-g", "1024", "-O", "meta_bg,^resize_inode"]),
    ("ext2 1k", 24, &["-t", "ext2", "-b", "1024"]),
    ("ext3 2k", 24, &["-t", "ext3", "-b", "2048", "-g", "4096"]),
];

/// Operations per sequence.
const OPS_PER_CASE: usize = 60;
/// Files written into `/big` before the sequence starts, which `e2fsck -fyD` then indexes.
const BIG_DIR_FILES: usize = 120;
/// Time of the first operation; each operation adds 100 seconds.
const START_TIME: i64 = 1_700_000_000;

/// A small xorshift generator, so that a seed replays a case exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len() as u64) as usize)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Meta {
    mode: u16,
    uid: u32,
    gid: u32,
    atime: i64,
    mtime: i64,
}

#[derive(Clone, Debug)]
enum Kind {
    File(Vec<u8>),
    Dir(BTreeMap<String, usize>),
    Symlink(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    meta: Meta,
}

/// The expected tree: nodes by id, the root being 0. Names that are hard links share a node.
#[derive(Clone, Debug)]
struct Model {
    nodes: HashMap<usize, Node>,
    next_id: usize,
}

/// One operation of a sequence.
#[derive(Clone, Debug)]
enum Op {
    Write { path: String, len: usize, seed: u64, mode: u16, uid: u32, gid: u32 },
    WriteAt { path: String, offset: u64, len: usize, seed: u64 },
    Truncate { path: String, size: u64 },
    MkdirAll { path: String },
    Remove { path: String },
    RemoveDir { path: String },
    RemoveTree { path: String },
    Symlink { path: String, target: String },
    Rename { from: String, to: String },
    SetAttrs { path: String, attrs: SetAttrs },
    Link { from: String, to: String },
}

fn split(path: &str) -> (String, String) {
    let (parent, name) = path.rsplit_once('/').unwrap();
    (if parent.is_empty() { "/".to_string() } else { parent.to_string() }, name.to_string())
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" { format!("/{name}") } else { format!("{dir}/{name}") }
}

impl Model {
    fn new(root_meta: Meta) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(0, Node { kind: Kind::Dir(BTreeMap::new()), meta: root_meta });
        Model { nodes, next_id: 1 }
    }

    fn add(&mut self, node: Node) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        self.nodes.insert(id, node);
        id
    }

    fn lookup(&self, path: &str) -> Option<usize> {
        let mut current = 0;
        for part in path.split('/').filter(|part| !part.is_empty()) {
            match &self.nodes[&current].kind {
                Kind::Dir(entries) => current = *entries.get(part)?,
                _ => return None,
            }
        }
        Some(current)
    }

    fn entries(&self, id: usize) -> &BTreeMap<String, usize> {
        match &self.nodes[&id].kind {
            Kind::Dir(entries) => entries,
            _ => panic!("node {id} is not a directory"),
        }
    }

    fn entries_mut(&mut self, id: usize) -> &mut BTreeMap<String, usize> {
        match &mut self.nodes.get_mut(&id).unwrap().kind {
            Kind::Dir(entries) => entries,
            _ => panic!("node {id} is not a directory"),
        }
    }

    fn is_dir(&self, id: usize) -> bool {
        matches!(self.nodes[&id].kind, Kind::Dir(_))
    }

    /// Lists every path in the tree with its node, parents before children.
    fn paths(&self) -> Vec<(String, usize)> {
        let mut out = vec![("/".to_string(), 0)];
        let mut index = 0;
        while index < out.len() {
            let (path, id) = out[index].clone();
            if let Kind::Dir(entries) = &self.nodes[&id].kind {
                for (name, child) in entries {
                    out.push((join(&path, name), *child));
                }
            }
            index += 1;
        }
        out
    }

    /// Drops nodes no name reaches any more.
    fn collect_garbage(&mut self) {
        let reachable: std::collections::HashSet<usize> =
            self.paths().into_iter().map(|(_, id)| id).collect();
        self.nodes.retain(|id, _| reachable.contains(id));
    }

    fn touch_dir(&mut self, id: usize, time: i64) {
        self.nodes.get_mut(&id).unwrap().meta.mtime = time;
    }

    fn is_ancestor(&self, ancestor: &str, path: &str) -> bool {
        path == ancestor || path.starts_with(&format!("{}/", ancestor.trim_end_matches('/')))
    }

    /// Applies `op` at `time`, returning the name of the error the writer must return.
    fn apply(&mut self, op: &Op, time: i64) -> Result<(), &'static str> {
        let attrs_meta = |mode: u16, uid: u32, gid: u32| Meta { mode, uid, gid, atime: time, mtime: time };
        match op {
            Op::Write { path, len, seed, mode, uid, gid } => {
                let (parent, name) = split(path);
                let parent_id = self.lookup(&parent).unwrap();
                match self.entries(parent_id).get(&name).copied() {
                    Some(id) => match &mut self.nodes.get_mut(&id).unwrap().kind {
                        Kind::File(data) => {
                            *data = pattern(*len, *seed);
                            self.nodes.get_mut(&id).unwrap().meta = attrs_meta(*mode, *uid, *gid);
                        }
                        Kind::Dir(_) => return Err("IsADirectory"),
                        Kind::Symlink(_) => return Err("AlreadyExists"),
                    },
                    None => {
                        let node = Node {
                            kind: Kind::File(pattern(*len, *seed)),
                            meta: attrs_meta(*mode, *uid, *gid),
                        };
                        let id = self.add(node);
                        self.entries_mut(parent_id).insert(name, id);
                        self.touch_dir(parent_id, time);
                    }
                }
            }
            Op::WriteAt { path, offset, len, seed } => {
                let id = self.lookup(path).unwrap();
                let node = self.nodes.get_mut(&id).unwrap();
                match &mut node.kind {
                    Kind::File(data) => {
                        let end = *offset as usize + len;
                        if data.len() < end {
                            data.resize(end, 0);
                        }
                        data[*offset as usize..end].copy_from_slice(&pattern(*len, *seed));
                        node.meta.mtime = time;
                    }
                    Kind::Dir(_) => return Err("IsADirectory"),
                    Kind::Symlink(_) => return Err("NotAFile"),
                }
            }
            Op::Truncate { path, size } => {
                let id = self.lookup(path).unwrap();
                let node = self.nodes.get_mut(&id).unwrap();
                match &mut node.kind {
                    Kind::File(data) => {
                        data.resize(*size as usize, 0);
                        node.meta.mtime = time;
                    }
                    Kind::Dir(_) => return Err("IsADirectory"),
                    Kind::Symlink(_) => return Err("NotAFile"),
                }
            }
            Op::MkdirAll { path } => {
                let mut current = 0;
                for part in path.split('/').filter(|part| !part.is_empty()) {
                    match self.entries(current).get(part).copied() {
                        Some(id) if self.is_dir(id) => current = id,
                        Some(_) => return Err("NotADirectory"),
                        None => {
                            let node =
                                Node { kind: Kind::Dir(BTreeMap::new()), meta: attrs_meta(0o755, 0, 0) };
                            let id = self.add(node);
                            self.entries_mut(current).insert(part.to_string(), id);
                            self.touch_dir(current, time);
                            current = id;
                        }
                    }
                }
            }
            Op::Remove { path } => {
                let (parent, name) = split(path);
                let parent_id = self.lookup(&parent).unwrap();
                let id = self.entries(parent_id)[&name];
                if self.is_dir(id) {
                    return Err("IsADirectory");
                }
                self.entries_mut(parent_id).remove(&name);
                self.touch_dir(parent_id, time);
            }
            Op::RemoveDir { path } => {
                let (parent, name) = split(path);
                let parent_id = self.lookup(&parent).unwrap();
                let id = self.entries(parent_id)[&name];
                if !self.is_dir(id) {
                    return Err("NotADirectory");
                }
                if !self.entries(id).is_empty() {
                    return Err("DirectoryNotEmpty");
                }
                self.entries_mut(parent_id).remove(&name);
                self.touch_dir(parent_id, time);
            }
            Op::RemoveTree { path } => {
                let (parent, name) = split(path);
                let parent_id = self.lookup(&parent).unwrap();
                self.entries_mut(parent_id).remove(&name);
                self.touch_dir(parent_id, time);
            }
            Op::Symlink { path, target } => {
                let (parent, name) = split(path);
                let parent_id = self.lookup(&parent).unwrap();
                if self.entries(parent_id).contains_key(&name) {
                    return Err("AlreadyExists");
                }
                let node =
                    Node { kind: Kind::Symlink(target.as_bytes().to_vec()), meta: attrs_meta(0o777, 7, 8) };
                let id = self.add(node);
                self.entries_mut(parent_id).insert(name, id);
                self.touch_dir(parent_id, time);
            }
            Op::Rename { from, to } => {
                let (from_parent, from_name) = split(from);
                let (to_parent, to_name) = split(to);
                let from_parent_id = self.lookup(&from_parent).unwrap();
                let to_parent_id = self.lookup(&to_parent).unwrap();
                let id = self.entries(from_parent_id)[&from_name];
                let existing = self.entries(to_parent_id).get(&to_name).copied();
                if existing == Some(id) {
                    return Ok(());
                }
                let is_dir = self.is_dir(id);
                if is_dir && self.is_ancestor(from, &to_parent) {
                    return Err("RenameIntoItself");
                }
                if let Some(existing) = existing {
                    match (is_dir, self.is_dir(existing)) {
                        (true, false) => return Err("NotADirectory"),
                        (false, true) => return Err("IsADirectory"),
                        (true, true) if !self.entries(existing).is_empty() => {
                            return Err("DirectoryNotEmpty");
                        }
                        _ => {}
                    }
                }
                self.entries_mut(from_parent_id).remove(&from_name);
                self.entries_mut(to_parent_id).insert(to_name, id);
                self.touch_dir(from_parent_id, time);
                self.touch_dir(to_parent_id, time);
            }
            Op::SetAttrs { path, attrs } => {
                let id = self.lookup(path).unwrap();
                let meta = &mut self.nodes.get_mut(&id).unwrap().meta;
                if let Some(mode) = attrs.mode {
                    meta.mode = mode & 0o7777;
                }
                meta.uid = attrs.uid.unwrap_or(meta.uid);
                meta.gid = attrs.gid.unwrap_or(meta.gid);
                meta.atime = attrs.atime.unwrap_or(meta.atime);
                meta.mtime = attrs.mtime.unwrap_or(meta.mtime);
            }
            Op::Link { from, to } => {
                let id = self.lookup(from).unwrap();
                if self.is_dir(id) {
                    return Err("HardLinkToDirectory");
                }
                let (to_parent, to_name) = split(to);
                let to_parent_id = self.lookup(&to_parent).unwrap();
                if self.entries(to_parent_id).contains_key(&to_name) {
                    return Err("AlreadyExists");
                }
                self.entries_mut(to_parent_id).insert(to_name, id);
                self.touch_dir(to_parent_id, time);
            }
        }
        self.collect_garbage();
        Ok(())
    }
}

/// Names the variant of a writer error, as the model names the errors it expects.
fn error_name(error: &ExtError) -> &'static str {
    match error {
        ExtError::NotFound(_) => "NotFound",
        ExtError::NotADirectory(_) => "NotADirectory",
        ExtError::IsADirectory(_) => "IsADirectory",
        ExtError::AlreadyExists(_) => "AlreadyExists",
        ExtError::NotAFile(_) => "NotAFile",
        ExtError::DirectoryNotEmpty(_) => "DirectoryNotEmpty",
        ExtError::RenameIntoItself { .. } => "RenameIntoItself",
        ExtError::HardLinkToDirectory(_) => "HardLinkToDirectory",
        ExtError::NoSpace { .. } => "NoSpace",
        _ => "other",
    }
}

/// Names for new entries: short ones, and long ones that fill directory blocks fast.
fn random_name(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=5 => ["a", "b", "c", "d", "e", "f"][rng.below(6) as usize].to_string(),
        6 | 7 => format!("n{}", rng.below(40)),
        _ => format!("{}-{}", "long-name".repeat(1 + rng.below(20) as usize), rng.below(10)),
    }
}

/// Picks a data length: mostly small, sometimes several blocks, rarely megabytes.
fn random_len(rng: &mut Rng) -> usize {
    match rng.below(20) {
        0..=7 => rng.below(200) as usize,
        8..=15 => rng.below(40_000) as usize,
        16..=18 => rng.below(300_000) as usize,
        _ => 1_000_000 + rng.below(2_000_000) as usize,
    }
}

/// Generates one operation that fits the model's current tree.
fn random_op(rng: &mut Rng, model: &Model) -> Op {
    let paths = model.paths();
    let dirs: Vec<&String> = paths.iter().filter(|(_, id)| model.is_dir(*id)).map(|(path, _)| path).collect();
    // lost+found stays where it is: e2fsck reports a missing one.
    let entries: Vec<&String> =
        paths.iter().skip(1).map(|(path, _)| path).filter(|path| *path != "/lost+found").collect();
    let files: Vec<&String> = paths
        .iter()
        .filter(|(_, id)| matches!(model.nodes[id].kind, Kind::File(_)))
        .map(|(path, _)| path)
        .collect();
    let new_path = |rng: &mut Rng| join(rng.pick(&dirs).unwrap(), &random_name(rng));
    let existing = |rng: &mut Rng| rng.pick(&entries).map(|path| path.to_string());

    loop {
        let op = match rng.below(100) {
            0..=19 => {
                let path = if rng.chance(25) {
                    rng.pick(&files).map(|p| p.to_string())
                } else {
                    Some(new_path(rng))
                };
                path.map(|path| Op::Write {
                    path,
                    len: random_len(rng),
                    seed: rng.next(),
                    mode: 0o600 + rng.below(0o200) as u16,
                    uid: rng.below(70_000) as u32,
                    gid: rng.below(70_000) as u32,
                })
            }
            20..=29 => rng.pick(&files).map(|path| {
                let size = match &model.nodes[&model.lookup(path).unwrap()].kind {
                    Kind::File(data) => data.len() as u64,
                    _ => 0,
                };
                let offset = rng.below(size + 50_000);
                Op::WriteAt {
                    path: path.to_string(),
                    offset,
                    len: random_len(rng).min(100_000),
                    seed: rng.next(),
                }
            }),
            30..=35 => {
                let path =
                    if rng.chance(10) { existing(rng) } else { rng.pick(&files).map(|p| p.to_string()) };
                path.map(|path| Op::Truncate { path, size: rng.below(60_000) })
            }
            36..=45 => {
                let base = rng.pick(&dirs).unwrap().to_string();
                let first = random_name(rng);
                let existing = model.entries(model.lookup(&base).unwrap()).get(&first).copied();
                // The writer follows symbolic links on the way, as `mkdir -p` does, and the
                // model does not, so paths through links are left out.
                let through_link =
                    existing.is_some_and(|id| matches!(model.nodes[&id].kind, Kind::Symlink(_)));
                if through_link || (existing.is_some() && !rng.chance(20)) {
                    None
                } else {
                    let mut path = join(&base, &first);
                    for _ in 0..rng.below(3) {
                        path = join(&path, &random_name(rng));
                    }
                    Some(Op::MkdirAll { path })
                }
            }
            46..=53 => existing(rng).map(|path| Op::Remove { path }),
            54..=57 => {
                // Mostly empty directories, sometimes anything else to see the rejections.
                let empty: Vec<&String> = paths
                    .iter()
                    .filter(|(path, id)| {
                        model.is_dir(*id) && model.entries(*id).is_empty() && path != "/lost+found"
                    })
                    .map(|(path, _)| path)
                    .filter(|path| *path != "/")
                    .collect();
                let path =
                    if rng.chance(70) { rng.pick(&empty).map(|p| p.to_string()) } else { existing(rng) };
                path.map(|path| Op::RemoveDir { path })
            }
            58..=61 => existing(rng).map(|path| Op::RemoveTree { path }),
            62..=69 => {
                let len = if rng.chance(50) { 1 + rng.below(59) } else { 60 + rng.below(900) };
                let target: String =
                    (0..len).map(|i| char::from(b"abcdefgh/"[((i + len) % 9) as usize])).collect();
                Some(Op::Symlink { path: new_path(rng), target })
            }
            70..=81 => existing(rng).map(|from| {
                let to = if rng.chance(20) { existing(rng).unwrap() } else { new_path(rng) };
                Op::Rename { from, to }
            }),
            82..=91 => {
                let path = if rng.chance(5) { Some("/".to_string()) } else { existing(rng) };
                path.map(|path| {
                    let mut attrs = SetAttrs::default();
                    if rng.chance(50) {
                        attrs.mode = Some(rng.below(0o10000) as u16);
                    }
                    if rng.chance(40) {
                        attrs.uid = Some(rng.below(1 << 20) as u32);
                        attrs.gid = Some(rng.below(1 << 20) as u32);
                    }
                    if rng.chance(50) {
                        // ext4-view 1.0 rejects times before 1970, so none are generated.
                        attrs.atime = Some(START_TIME - 86_400 * rng.below(19_000) as i64);
                        attrs.mtime = Some(START_TIME + rng.below(1 << 20) as i64);
                        attrs.ctime = Some(START_TIME + 5);
                    }
                    Op::SetAttrs { path, attrs }
                })
            }
            _ => {
                let from =
                    if rng.chance(85) { rng.pick(&files).map(|p| p.to_string()) } else { existing(rng) };
                from.map(|from| Op::Link { from, to: new_path(rng) })
            }
        };
        if let Some(op) = op {
            return op;
        }
    }
}

/// Applies `op` to the filesystem.
fn apply_to_fs<V: mender_preauth::image::volume::VolumeMut>(
    ext: &mut Ext<V>,
    op: &Op,
    time: i64,
) -> Result<(), ExtError> {
    match op {
        Op::Write { path, len, seed, mode, uid, gid } => ext
            .write_file(path, &pattern(*len, *seed), &NewAttrs { mode: *mode, uid: *uid, gid: *gid, time })
            .map(drop),
        Op::WriteAt { path, offset, len, seed } => ext.write_at(path, *offset, &pattern(*len, *seed), time),
        Op::Truncate { path, size } => ext.truncate(path, *size, time),
        Op::MkdirAll { path } => {
            ext.create_dir_all(path, &NewAttrs { mode: 0o755, uid: 0, gid: 0, time }).map(drop)
        }
        Op::Remove { path } => ext.remove_file(path, time),
        Op::RemoveDir { path } => ext.remove_dir(path, time),
        Op::RemoveTree { path } => ext.remove_tree(path, time),
        Op::Symlink { path, target } => {
            ext.symlink(path, target.as_bytes(), &NewAttrs { mode: 0, uid: 7, gid: 8, time }).map(drop)
        }
        Op::Rename { from, to } => ext.rename(from, to, time),
        Op::SetAttrs { path, attrs } => ext.set_attrs(path, attrs),
        Op::Link { from, to } => ext.link(from, to, time),
    }
}

/// Hashes the staged writes, to show that a rejected operation staged nothing.
fn pending_digest(volume: &Staged<Vec<u8>>) -> u64 {
    let mut hasher = DefaultHasher::new();
    for (offset, bytes) in volume.pending_writes() {
        offset.hash(&mut hasher);
        bytes.hash(&mut hasher);
    }
    hasher.finish()
}

/// Builds the starting image of a case: `/big` with many long names, indexed by e2fsck when
/// the feature set has `dir_index`. Returns the image and the model of its tree.
fn starting_image(size_mib: u64, args: &[&str]) -> (Image, Model) {
    let image = make_image(size_mib, args, None);
    let time = START_TIME - 1000;
    let mut model = Model::new(Meta { mode: 0o755, uid: 0, gid: 0, atime: 0, mtime: 0 });
    let lost_found = Meta { mode: 0o700, uid: 0, gid: 0, atime: 0, mtime: 0 };
    let lost_found = model.add(Node { kind: Kind::Dir(BTreeMap::new()), meta: lost_found });
    model.entries_mut(0).insert("lost+found".to_string(), lost_found);
    modify(&image.path, |ext| {
        ext.create_dir("/big", &NewAttrs { mode: 0o755, uid: 0, gid: 0, time })?;
        for index in 0..BIG_DIR_FILES {
            let name = format!("/big/{}-{index:04}", "entry".repeat(8));
            ext.write_file(&name, name.as_bytes(), &NewAttrs { mode: 0o644, uid: 1, gid: 2, time })?;
        }
        Ok(())
    });
    model.apply(&Op::MkdirAll { path: "/big".to_string() }, time).unwrap();
    for index in 0..BIG_DIR_FILES {
        let name = format!("/big/{}-{index:04}", "entry".repeat(8));
        let node = Node {
            kind: Kind::File(name.as_bytes().to_vec()),
            meta: Meta { mode: 0o644, uid: 1, gid: 2, atime: time, mtime: time },
        };
        let id = model.add(node);
        let big = model.lookup("/big").unwrap();
        model.entries_mut(big).insert(name.rsplit('/').next().unwrap().to_string(), id);
    }
    index_directories(&image.path);
    // The root and lost+found keep the times mkfs gave them, and /big the one e2fsck left.
    inspect(&image.path, |ext| {
        let big = model.lookup("/big").unwrap();
        for (path, id) in [("/", 0), ("/lost+found", lost_found), ("/big", big)] {
            let meta = ext.metadata(ext.lookup(path).unwrap().unwrap()).unwrap();
            let node = model.nodes.get_mut(&id).unwrap();
            node.meta.atime = meta.atime;
            node.meta.mtime = meta.mtime;
        }
    });
    (image, model)
}

/// Operations applied and rejected, by kind.
type Tally = BTreeMap<String, (u32, u32)>;

/// Runs one case, logging each operation in `log` and counting it in `tally`. Returns the
/// first mismatch between the writer and the model.
fn run_case(
    seed: u64,
    size_mib: u64,
    args: &[&str],
    log: &mut Vec<String>,
    tally: &mut Tally,
) -> Result<(), String> {
    let mut rng = Rng(seed | 1);
    let (image, mut model) = starting_image(size_mib, args);
    let bytes = std::fs::read(&image.path).unwrap();
    let mut ext = Ext::open(Staged::new(bytes)).map_err(|error| format!("open: {error}"))?;

    for step in 0..OPS_PER_CASE {
        let op = random_op(&mut rng, &model);
        let time = START_TIME + 100 * step as i64;
        log.push(format!("{op:?}"));
        let mut expected_model = model.clone();
        let expected = expected_model.apply(&op, time);
        let before = pending_digest(ext.volume());
        let result = apply_to_fs(&mut ext, &op, time);
        let kind = format!("{op:?}").split([' ', '{']).next().unwrap_or_default().to_string();
        let counts = tally.entry(kind).or_default();
        if result.is_ok() {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
        match (&expected, &result) {
            (Ok(()), Ok(())) => model = expected_model,
            (Err(name), Err(error)) if *name == error_name(error) => {
                if pending_digest(ext.volume()) != before {
                    return Err(format!("step {step}: rejected with {error} but staged writes"));
                }
            }
            _ => return Err(format!("step {step}: model expects {expected:?}, writer returned {result:?}")),
        }
    }

    let (base, pending) = ext.into_volume().into_parts().unwrap();
    let mut bytes = base;
    for (offset, data) in pending {
        bytes[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
    }
    std::fs::write(&image.path, &bytes).unwrap();

    let checked = check_fsck(&image.path)
        .and_then(|()| check_with_ext4_view(&image.path, &model))
        .and_then(|()| check_with_debugfs(&image.path, &model));
    if checked.is_err()
        && let Some(dir) = std::env::var_os("MENDER_PREAUTH_PROPTEST_KEEP")
    {
        std::fs::copy(&image.path, Path::new(&dir).join(format!("case-{seed}.img"))).unwrap();
    }
    checked
}

/// Runs `e2fsck -fn` and returns its report unless it is clean.
fn check_fsck(image: &Path) -> Result<(), String> {
    let output = Command::new("e2fsck").arg("-fn").arg(image).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let clean = output.status.code() == Some(0)
        && stdout.lines().all(|line| {
            line.is_empty()
                || line.starts_with("Pass ")
                || line.starts_with("e2fsck ")
                || (line.contains(" files (") && line.ends_with(" blocks"))
        });
    if clean {
        Ok(())
    } else {
        Err(format!("e2fsck -fn: {stdout}{}", String::from_utf8_lossy(&output.stderr)))
    }
}

/// Features that ext4-view 1.0 refuses to open although no inode uses them here: the check
/// reads a copy of the image with these bits cleared (and the superblock checksum redone).
const EXT4_VIEW_IGNORED_INCOMPAT: u32 = 0x4000 | 0x8000;

fn check_with_ext4_view(image: &Path, model: &Model) -> Result<(), String> {
    let mut bytes = std::fs::read(image).unwrap();
    let incompat = u32::from_le_bytes(bytes[1024 + 0x60..1024 + 0x64].try_into().unwrap());
    if incompat & 0x10 != 0 {
        // ext4-view 1.0 cannot read meta_bg descriptors; debugfs checks this feature set.
        return Ok(());
    }
    if incompat & EXT4_VIEW_IGNORED_INCOMPAT != 0 {
        let cleared = incompat & !EXT4_VIEW_IGNORED_INCOMPAT;
        bytes[1024 + 0x60..1024 + 0x64].copy_from_slice(&cleared.to_le_bytes());
        let ro_compat = u32::from_le_bytes(bytes[1024 + 0x64..1024 + 0x68].try_into().unwrap());
        if ro_compat & 0x400 != 0 {
            let checksum = !crc32c_standard(&bytes[1024..1024 + 0x3FC]);
            bytes[1024 + 0x3FC..1024 + 0x400].copy_from_slice(&checksum.to_le_bytes());
        }
    }
    let extents = incompat & 0x40 != 0;
    let fs = ext4_view::Ext4::load(Box::new(bytes)).map_err(|error| format!("ext4-view load: {error}"))?;
    for (path, id) in model.paths() {
        let node = &model.nodes[&id];
        let meta =
            fs.symlink_metadata(path.as_str()).map_err(|error| format!("ext4-view {path}: {error}"))?;
        let found = Meta {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            atime: meta.accessed().seconds(),
            mtime: meta.modified().seconds(),
        };
        if found != node.meta {
            return Err(format!("ext4-view {path}: metadata {found:?}, model {:?}", node.meta));
        }
        match &node.kind {
            Kind::File(data) => {
                if !meta.file_type().is_regular_file() || meta.len() != data.len() as u64 {
                    return Err(format!("ext4-view {path}: {:?} of {} bytes", meta.file_type(), meta.len()));
                }
                match fs.read(path.as_str()) {
                    Ok(read) if &read == data => {}
                    Ok(_) => return Err(format!("ext4-view {path}: contents differ")),
                    // ext4-view 1.0 reads block 0 for a hole that spans a whole indirect block
                    // of an ext2/3 block map; debugfs below compares those contents.
                    Err(error) if !extents && error.to_string().contains("from block 0") => {}
                    Err(error) => return Err(format!("ext4-view read {path}: {error}")),
                }
            }
            Kind::Symlink(target) => {
                let link =
                    fs.read_link(path.as_str()).map_err(|error| format!("ext4-view {path}: {error}"))?;
                if link.as_ref() != target.as_slice() {
                    return Err(format!("ext4-view {path}: target {}", link.display()));
                }
            }
            Kind::Dir(entries) => {
                let mut names = Vec::new();
                for entry in
                    fs.read_dir(path.as_str()).map_err(|error| format!("ext4-view {path}: {error}"))?
                {
                    let entry = entry.map_err(|error| format!("ext4-view {path}: {error}"))?;
                    let name = entry.file_name().as_str().unwrap().to_string();
                    if name != "." && name != ".." {
                        names.push(name);
                    }
                }
                names.sort();
                let expected: Vec<&String> = entries.keys().collect();
                if names.iter().collect::<Vec<_>>() != expected {
                    return Err(format!("ext4-view {path}: entries {names:?}, model {expected:?}"));
                }
            }
        }
    }
    Ok(())
}

/// Computes the standard CRC32C, for resealing a superblock copy.
fn crc32c_standard(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

fn check_with_debugfs(image: &Path, model: &Model) -> Result<(), String> {
    let paths = model.paths();
    let work = tempfile::tempdir().unwrap();

    // `ls -p` of every directory: inode, mode, owner and size of each entry.
    let script: String =
        paths.iter().filter(|(_, id)| model.is_dir(*id)).map(|(path, _)| format!("ls -p {path}\n")).collect();
    let script_path = work.path().join("script");
    std::fs::write(&script_path, script).unwrap();
    let output = Command::new("debugfs").arg("-f").arg(&script_path).arg(image).output().unwrap();
    let listing = String::from_utf8_lossy(&output.stdout);
    let mut inode_of_node: HashMap<usize, u64> = HashMap::new();
    let mut current_dir = String::new();
    let mut seen = 0;
    for line in listing.lines() {
        if let Some(request) = line.strip_prefix("debugfs: ls -p ") {
            current_dir = request.to_string();
            continue;
        }
        let fields: Vec<&str> = line.split('/').collect();
        // Unused records list with inode 0: a removed name that started its block keeps its
        // name there, and lost+found's spare blocks have an empty one.
        if fields.len() < 7 || fields[1] == "0" || fields[5] == "." || fields[5] == ".." {
            continue;
        }
        let path = join(&current_dir, fields[5]);
        let Some(id) = model.lookup(&path) else {
            return Err(format!("debugfs lists {path}, which the model does not have"));
        };
        seen += 1;
        let node = &model.nodes[&id];
        let ino: u64 = fields[1].parse().unwrap();
        let mode = u32::from_str_radix(fields[2], 8).unwrap();
        let (uid, gid): (u32, u32) = (fields[3].parse().unwrap(), fields[4].parse().unwrap());
        let kind_bits = match node.kind {
            Kind::File(_) => 0o100000,
            Kind::Dir(_) => 0o040000,
            Kind::Symlink(_) => 0o120000,
        };
        if mode != kind_bits | u32::from(node.meta.mode) || uid != node.meta.uid || gid != node.meta.gid {
            return Err(format!("debugfs {path}: mode {mode:o} owner {uid}:{gid}, model {:?}", node.meta));
        }
        if let Kind::File(data) = &node.kind
            && fields[6].parse::<u64>().ok() != Some(data.len() as u64)
        {
            return Err(format!("debugfs {path}: size {}, model {}", fields[6], data.len()));
        }
        if *inode_of_node.entry(id).or_insert(ino) != ino {
            return Err(format!(
                "debugfs {path}: inode {ino}, but another name of the same file has another"
            ));
        }
    }
    if seen != paths.len() - 1 {
        return Err(format!("debugfs listed {seen} entries, the model has {}", paths.len() - 1));
    }
    let mut inodes: Vec<u64> = inode_of_node.values().copied().collect();
    inodes.sort_unstable();
    inodes.dedup();
    if inodes.len() != inode_of_node.len() {
        return Err("debugfs: two files of the model share an inode".to_string());
    }

    // `rdump` for contents and symbolic link targets.
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let output = Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", out.display()))
        .arg(image)
        .output()
        .unwrap();
    if !output.status.success() {
        return Err(format!("debugfs rdump: {}", String::from_utf8_lossy(&output.stderr)));
    }
    for (path, id) in &paths {
        let local = out.join(path.trim_start_matches('/'));
        let meta = std::fs::symlink_metadata(&local).map_err(|error| format!("rdump {path}: {error}"))?;
        match &model.nodes[id].kind {
            Kind::File(data) => {
                if &std::fs::read(&local).unwrap() != data {
                    return Err(format!("debugfs rdump {path}: contents differ"));
                }
                // rdump sets the owner after the mode, which clears setuid and setgid. So only
                // the permission bits are compared here, and `ls -p` above compared all of them.
                if meta.permissions().mode() & 0o777 != u32::from(model.nodes[id].meta.mode & 0o777) {
                    return Err(format!("debugfs rdump {path}: mode {:o}", meta.permissions().mode()));
                }
                if meta.mtime() != model.nodes[id].meta.mtime {
                    return Err(format!("debugfs rdump {path}: mtime {}", meta.mtime()));
                }
            }
            Kind::Symlink(target) => {
                let link = std::fs::read_link(&local).unwrap();
                if link.as_os_str().as_encoded_bytes() != target.as_slice() {
                    return Err(format!("debugfs rdump {path}: target {link:?}"));
                }
            }
            Kind::Dir(_) => {
                if !meta.is_dir() {
                    return Err(format!("debugfs rdump {path}: not a directory"));
                }
            }
        }
    }
    Ok(())
}

/// Number of cases to run: the environment's `MENDER_PREAUTH_PROPTEST_CASES`, else one per
/// feature set twice.
fn case_count() -> usize {
    std::env::var("MENDER_PREAUTH_PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2 * MATRIX.len())
}

/// Returns the only case to run, from `MENDER_PREAUTH_PROPTEST_CASE`, to replay a failure.
fn only_case() -> Option<usize> {
    std::env::var("MENDER_PREAUTH_PROPTEST_CASE").ok().and_then(|value| value.parse().ok())
}

fn first_seed() -> u64 {
    std::env::var("MENDER_PREAUTH_PROPTEST_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0x5EED_0001)
}

#[test]
fn random_operations_match_the_model() {
    if tools("random_operations_match_the_model").is_none() {
        return;
    }
    let cases = case_count();
    let first = first_seed();
    let results: Vec<(Vec<String>, Tally)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|worker| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    let mut tally = BTreeMap::new();
                    for case in (worker..cases).step_by(2) {
                        if only_case().is_some_and(|only| only != case) {
                            continue;
                        }
                        let seed = first.wrapping_add(case as u64);
                        let (name, size, args) = MATRIX[case % MATRIX.len()];
                        let mut log = Vec::new();
                        if let Err(message) = run_case(seed, size, args, &mut log, &mut tally) {
                            failures.push(format!(
                                "{name}, case {case} of seed {first} (replay with MENDER_PREAUTH_PROPTEST_SEED={first} \
                                 MENDER_PREAUTH_PROPTEST_CASE={case} MENDER_PREAUTH_PROPTEST_CASES={cases}): \
                                 {message}\nops:\n  {}",
                                log.join("\n  ")
                            ));
                        }
                    }
                    (failures, tally)
                })
            })
            .collect();
        workers.into_iter().map(|worker| worker.join().unwrap()).collect()
    });
    let mut tally = Tally::new();
    let mut failures = Vec::new();
    for (worker_failures, worker_tally) in results {
        failures.extend(worker_failures);
        for (kind, (ok, rejected)) in worker_tally {
            let counts = tally.entry(kind).or_default();
            counts.0 += ok;
            counts.1 += rejected;
        }
    }
    eprintln!("{cases} cases of {OPS_PER_CASE} operations; applied and rejected per operation: {tally:?}");
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n\n"));
}
