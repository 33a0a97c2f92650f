//! Feature flags of the superblock: their names as e2fsprogs prints them, and which of them this
//! module can read and write.

use super::error::ExtError;

/// The superblock feature word (of three) that contains a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FeatureWord {
    /// `s_feature_compat`: a kernel that does not know the flag may still write.
    Compat,
    /// `s_feature_incompat`: a kernel that does not know the flag must not mount.
    Incompat,
    /// `s_feature_ro_compat`: a kernel that does not know the flag may only read.
    RoCompat,
}

/// The level of support this module gives a filesystem with a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Support {
    /// Read and written.
    Full,
    /// Read, but writes are rejected.
    ReadOnly,
    /// Neither read nor written.
    Unreadable,
}

/// One feature flag.
struct Feature {
    word: FeatureWord,
    mask: u32,
    name: &'static str,
    support: Support,
    /// Advice for a user whose filesystem has this feature.
    hint: &'static str,
}

const NO_HINT: &str =
    "mender-preauth cannot modify such filesystems yet; rebuild the filesystem without this feature";

pub(crate) const COMPAT_HAS_JOURNAL: u32 = 0x4;
pub(crate) const COMPAT_RESIZE_INODE: u32 = 0x10;
pub(crate) const COMPAT_DIR_INDEX: u32 = 0x20;
pub(crate) const COMPAT_SPARSE_SUPER2: u32 = 0x200;
pub(crate) const COMPAT_ORPHAN_FILE: u32 = 0x1000;
pub(crate) const INCOMPAT_FILETYPE: u32 = 0x2;
pub(crate) const INCOMPAT_RECOVER: u32 = 0x4;
pub(crate) const INCOMPAT_META_BG: u32 = 0x10;
pub(crate) const INCOMPAT_EXTENTS: u32 = 0x40;
pub(crate) const INCOMPAT_64BIT: u32 = 0x80;
pub(crate) const INCOMPAT_FLEX_BG: u32 = 0x200;
pub(crate) const INCOMPAT_CSUM_SEED: u32 = 0x2000;
pub(crate) const INCOMPAT_LARGEDIR: u32 = 0x4000;
pub(crate) const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
pub(crate) const RO_COMPAT_LARGE_FILE: u32 = 0x2;
pub(crate) const RO_COMPAT_HUGE_FILE: u32 = 0x8;
pub(crate) const RO_COMPAT_GDT_CSUM: u32 = 0x10;
pub(crate) const RO_COMPAT_DIR_NLINK: u32 = 0x20;
pub(crate) const RO_COMPAT_BIGALLOC: u32 = 0x200;
pub(crate) const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
pub(crate) const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x1_0000;

use FeatureWord::{Compat, Incompat, RoCompat};
use Support::{Full, ReadOnly, Unreadable};

/// Every feature flag e2fsprogs 1.47 names, in the order `dumpe2fs` prints them.
const FEATURES: &[Feature] = &[
    Feature { word: Compat, mask: 0x1, name: "dir_prealloc", support: Full, hint: "" },
    Feature { word: Compat, mask: 0x4, name: "has_journal", support: Full, hint: "" },
    Feature { word: Compat, mask: 0x2, name: "imagic_inodes", support: Full, hint: "" },
    Feature { word: Compat, mask: 0x8, name: "ext_attr", support: Full, hint: "" },
    Feature { word: Compat, mask: 0x20, name: "dir_index", support: Full, hint: "" },
    Feature { word: Compat, mask: 0x10, name: "resize_inode", support: Full, hint: "" },
    Feature { word: Compat, mask: 0x40, name: "lazy_bg", support: ReadOnly, hint: NO_HINT },
    Feature { word: Compat, mask: 0x100, name: "snapshot_bitmap", support: ReadOnly, hint: NO_HINT },
    Feature { word: Compat, mask: COMPAT_SPARSE_SUPER2, name: "sparse_super2", support: Full, hint: "" },
    Feature { word: Compat, mask: 0x400, name: "fast_commit", support: Full, hint: "" },
    Feature { word: Compat, mask: 0x800, name: "stable_inodes", support: Full, hint: "" },
    Feature { word: Compat, mask: 0x1000, name: "orphan_file", support: Full, hint: "" },
    Feature { word: RoCompat, mask: 0x1, name: "sparse_super", support: Full, hint: "" },
    Feature { word: RoCompat, mask: 0x2, name: "large_file", support: Full, hint: "" },
    Feature { word: RoCompat, mask: 0x8, name: "huge_file", support: Full, hint: "" },
    Feature { word: RoCompat, mask: 0x10, name: "uninit_bg", support: Full, hint: "" },
    Feature { word: RoCompat, mask: 0x20, name: "dir_nlink", support: Full, hint: "" },
    Feature { word: RoCompat, mask: 0x40, name: "extra_isize", support: Full, hint: "" },
    Feature {
        word: RoCompat,
        mask: 0x80,
        name: "snapshot",
        support: ReadOnly,
        hint: "mender-preauth cannot modify filesystems with snapshots; rebuild the filesystem without them",
    },
    Feature {
        word: RoCompat,
        mask: 0x100,
        name: "quota",
        support: ReadOnly,
        hint: "quota usage would go stale; run `tune2fs -O ^quota` on the image first",
    },
    Feature {
        word: RoCompat,
        mask: RO_COMPAT_BIGALLOC,
        name: "bigalloc",
        support: ReadOnly,
        hint: "cluster allocation is not implemented; rebuild the filesystem without -O bigalloc",
    },
    Feature { word: RoCompat, mask: 0x400, name: "metadata_csum", support: Full, hint: "" },
    Feature { word: RoCompat, mask: 0x800, name: "replica", support: ReadOnly, hint: NO_HINT },
    Feature {
        word: RoCompat,
        mask: 0x1000,
        name: "read-only",
        support: ReadOnly,
        hint: "the filesystem is marked read-only; clear it with `tune2fs -O ^read-only` first",
    },
    Feature {
        word: RoCompat,
        mask: 0x2000,
        name: "project",
        support: ReadOnly,
        hint: "project quota usage would go stale; run `tune2fs -O ^project` on the image first",
    },
    Feature { word: RoCompat, mask: 0x4000, name: "shared_blocks", support: ReadOnly, hint: NO_HINT },
    Feature { word: RoCompat, mask: 0x8000, name: "verity", support: ReadOnly, hint: NO_HINT },
    Feature {
        word: RoCompat,
        mask: RO_COMPAT_ORPHAN_PRESENT,
        name: "orphan_present",
        support: ReadOnly,
        hint: "run `e2fsck -fy` on it first",
    },
    Feature {
        word: Incompat,
        mask: 0x1,
        name: "compression",
        support: Unreadable,
        hint: "compressed ext2 files cannot be read",
    },
    Feature { word: Incompat, mask: 0x2, name: "filetype", support: Full, hint: "" },
    Feature {
        word: Incompat,
        mask: INCOMPAT_RECOVER,
        name: "needs_recovery",
        support: ReadOnly,
        hint: "run `e2fsck -fy` on it first",
    },
    Feature {
        word: Incompat,
        mask: 0x8,
        name: "journal_dev",
        support: Unreadable,
        hint: "this is an external journal, not a filesystem",
    },
    Feature { word: Incompat, mask: 0x40, name: "extent", support: Full, hint: "" },
    Feature { word: Incompat, mask: INCOMPAT_META_BG, name: "meta_bg", support: Full, hint: "" },
    Feature { word: Incompat, mask: 0x80, name: "64bit", support: Full, hint: "" },
    Feature {
        word: Incompat,
        mask: 0x100,
        name: "mmp",
        support: ReadOnly,
        hint: "multiple-mount protection is not implemented; run `tune2fs -O ^mmp` first",
    },
    Feature { word: Incompat, mask: 0x200, name: "flex_bg", support: Full, hint: "" },
    Feature {
        word: Incompat,
        mask: 0x400,
        name: "ea_inode",
        support: ReadOnly,
        hint: "extended attributes in inodes are not implemented",
    },
    Feature { word: Incompat, mask: 0x1000, name: "dirdata", support: Unreadable, hint: NO_HINT },
    Feature { word: Incompat, mask: 0x2000, name: "metadata_csum_seed", support: Full, hint: "" },
    Feature { word: Incompat, mask: 0x4000, name: "large_dir", support: Full, hint: "" },
    Feature { word: Incompat, mask: 0x8000, name: "inline_data", support: Full, hint: "" },
    Feature {
        word: Incompat,
        mask: 0x1_0000,
        name: "encrypt",
        support: ReadOnly,
        hint: "encrypted directories cannot be written",
    },
    Feature {
        word: Incompat,
        mask: 0x2_0000,
        name: "casefold",
        support: ReadOnly,
        hint: "case-insensitive directories cannot be written",
    },
];

/// The three feature words of a superblock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FeatureSet {
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
}

impl FeatureSet {
    fn word(&self, word: FeatureWord) -> u32 {
        match word {
            Compat => self.compat,
            Incompat => self.incompat,
            RoCompat => self.ro_compat,
        }
    }

    /// Lists the names of the set flags in `dumpe2fs` order, as e2fsprogs prints them. An
    /// unknown flag appears as `dumpe2fs` shows it, such as `FEATURE_I30` (word letter, bit).
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for word in [Compat, Incompat, RoCompat] {
            for bit in 0..32 {
                let mask = 1u32 << bit;
                if self.word(word) & mask == 0 {
                    continue;
                }
                match known(word, mask) {
                    Some(feature) => names.push(feature.name.to_string()),
                    None => names.push(unknown_name(word, bit)),
                }
            }
        }
        names
    }

    /// Rejects a filesystem this module cannot read at all.
    pub fn check_readable(&self) -> Result<(), ExtError> {
        self.check(|support| support == Unreadable, true)
    }

    /// Rejects a filesystem this module cannot modify.
    pub fn check_writable(&self) -> Result<(), ExtError> {
        self.check(|support| support != Full, false)
    }

    fn check(&self, rejected: impl Fn(Support) -> bool, unknown_compat_ok: bool) -> Result<(), ExtError> {
        for word in [Compat, Incompat, RoCompat] {
            for bit in 0..32 {
                let mask = 1u32 << bit;
                if self.word(word) & mask == 0 {
                    continue;
                }
                match known(word, mask) {
                    Some(feature) if rejected(feature.support) => {
                        return Err(ExtError::unsupported(feature.name, feature.hint));
                    }
                    Some(_) => {}
                    None if word == Compat && unknown_compat_ok => {}
                    None if word == RoCompat && unknown_compat_ok => {}
                    None => {
                        return Err(ExtError::unsupported(
                            unknown_name(word, bit),
                            "the feature is unknown to this module (and to e2fsprogs 1.47)",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Formats the `dumpe2fs` name of an unknown flag: the word's letter and the bit number.
fn unknown_name(word: FeatureWord, bit: u32) -> String {
    let letter = match word {
        Compat => 'C',
        Incompat => 'I',
        RoCompat => 'R',
    };
    format!("FEATURE_{letter}{bit}")
}

fn known(word: FeatureWord, mask: u32) -> Option<&'static Feature> {
    FEATURES.iter().find(|feature| feature.word == word && feature.mask == mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dumpe2fs_order() {
        let set = FeatureSet { compat: 0x3C, incompat: 0x2C2, ro_compat: 0x46B };
        let expected = "has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg \
                        sparse_super large_file huge_file dir_nlink extra_isize metadata_csum";
        assert_eq!(set.names().join(" "), expected);
        let unknown = FeatureSet { compat: 1 << 20, incompat: 0, ro_compat: 0 };
        assert_eq!(unknown.names(), ["FEATURE_C20"]);
    }

    #[test]
    fn unknown_incompat_bit_is_unreadable() {
        let set = FeatureSet { compat: 0, incompat: 1 << 30, ro_compat: 0 };
        let error = set.check_readable().unwrap_err();
        assert!(error.to_string().contains("FEATURE_I30"), "{error}");
    }

    #[test]
    fn bigalloc_is_readable_but_not_writable() {
        let set = FeatureSet { compat: 0, incompat: 0, ro_compat: RO_COMPAT_BIGALLOC };
        assert!(set.check_readable().is_ok());
        let error = set.check_writable().unwrap_err();
        assert!(error.to_string().contains("bigalloc"), "{error}");
    }
}
