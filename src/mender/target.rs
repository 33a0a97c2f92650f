//! The target device's binary layout (word size, byte order, CPU), read from the ELF header of a
//! program on its root filesystem. LMDB files such as `mender-store` are laid out in the native
//! word size and byte order of the machine that writes them, so the tool must know the device's.

use std::fmt;

/// Programs whose ELF header gives the target's layout, in the order they are tried: the Mender
/// client itself first (`mender-update` in newer clients, `mender` in 3.x), then common programs.
pub const TARGET_PROBE_PATHS: [&str; 4] =
    ["/usr/bin/mender-update", "/usr/bin/mender", "/bin/busybox", "/bin/sh"];

/// Number of header bytes [`TargetLayout::from_elf_header`] reads: `e_ident` and `e_type` are
/// followed by the two-byte `e_machine` at offset 18.
pub const ELF_HEADER_PREFIX_LEN: usize = 20;

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const EI_CLASS_OFFSET: usize = 4;
const EI_DATA_OFFSET: usize = 5;
const EI_VERSION_OFFSET: usize = 6;
const E_MACHINE_OFFSET: usize = 18;
/// Offset of `e_flags` in a 32-bit ELF header; in a 64-bit one it is 48.
const E_FLAGS_OFFSET_32: usize = 36;
const E_FLAGS_OFFSET_64: usize = 48;
/// Bytes of an ELF header up to and including `e_flags` in either class.
pub const ELF_HEADER_FLAGS_END: usize = E_FLAGS_OFFSET_64 + 4;

/// ARM `e_flags` bits that name the floating-point calling convention (ARM ELF ABI):
/// Debian's armhf binaries carry the hard-float bit, its armel binaries the soft-float bit.
const EF_ARM_ABI_FLOAT_SOFT: u32 = 0x200;
const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;
const EM_ARM: u16 = 40;

const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ELFDATA2MSB: u8 = 2;
const EV_CURRENT: u8 = 1;

/// Native word size of the target, which sets the width of LMDB's page numbers and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WordSize {
    /// 32-bit words (`ELFCLASS32`).
    Bits32,
    /// 64-bit words (`ELFCLASS64`).
    Bits64,
}

impl WordSize {
    /// Number of bits in a word.
    pub fn bits(self) -> u32 {
        match self {
            WordSize::Bits32 => 32,
            WordSize::Bits64 => 64,
        }
    }
}

impl fmt::Display for WordSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-bit", self.bits())
    }
}

/// Byte order of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endian {
    /// Least significant byte first (`ELFDATA2LSB`).
    Little,
    /// Most significant byte first (`ELFDATA2MSB`).
    Big,
}

impl fmt::Display for Endian {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Endian::Little => "little-endian",
            Endian::Big => "big-endian",
        })
    }
}

/// Errors from reading an ELF header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// Fewer bytes than the header fields we read.
    #[error("ELF header is truncated: {len} bytes, at least {ELF_HEADER_PREFIX_LEN} needed")]
    Truncated {
        /// Number of bytes given.
        len: usize,
    },

    /// The first four bytes are not `\x7fELF`.
    #[error("not an ELF file: the first bytes are {found:02x?}, expected 7f 45 4c 46")]
    NotElf {
        /// The first bytes found.
        found: Vec<u8>,
    },

    /// `EI_CLASS` is neither 32-bit nor 64-bit.
    #[error("invalid ELF class {found} (expected 1 for 32-bit or 2 for 64-bit)")]
    InvalidClass {
        /// The `EI_CLASS` byte found.
        found: u8,
    },

    /// `EI_DATA` is neither little-endian nor big-endian.
    #[error("invalid ELF data encoding {found} (expected 1 for little-endian or 2 for big-endian)")]
    InvalidByteOrder {
        /// The `EI_DATA` byte found.
        found: u8,
    },

    /// `EI_VERSION` is not the only defined version, 1.
    #[error("invalid ELF identification version {found} (expected 1)")]
    InvalidVersion {
        /// The `EI_VERSION` byte found.
        found: u8,
    },
}

/// Word size, byte order and CPU (`e_machine`) of the target device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TargetLayout {
    /// Native word size.
    pub bits: WordSize,
    /// Byte order.
    pub endian: Endian,
    /// ELF `e_machine` number, for example 62 for x86-64 or 183 for AArch64.
    pub machine: u16,
    /// ELF `e_flags`, processor-specific; 0 when the header given ends before it.
    pub flags: u32,
}

impl TargetLayout {
    /// Parses the start of an ELF file: checks the magic, `EI_CLASS`, `EI_DATA` and `EI_VERSION`,
    /// and reads `e_machine` in the file's byte order. Only the first
    /// [`ELF_HEADER_PREFIX_LEN`] bytes are required; `e_flags` is read when the header reaches it
    /// (up to [`ELF_HEADER_FLAGS_END`] bytes), so callers may pass a longer prefix of the file.
    pub fn from_elf_header(header: &[u8]) -> Result<Self, TargetError> {
        let leading_bytes: Vec<u8> = header.iter().take(ELF_MAGIC.len()).copied().collect();
        if !ELF_MAGIC.starts_with(&leading_bytes) {
            return Err(TargetError::NotElf { found: leading_bytes });
        }
        let Some(prefix) = header.get(..ELF_HEADER_PREFIX_LEN) else {
            return Err(TargetError::Truncated { len: header.len() });
        };

        let bits = match prefix[EI_CLASS_OFFSET] {
            ELFCLASS32 => WordSize::Bits32,
            ELFCLASS64 => WordSize::Bits64,
            found => return Err(TargetError::InvalidClass { found }),
        };
        let endian = match prefix[EI_DATA_OFFSET] {
            ELFDATA2LSB => Endian::Little,
            ELFDATA2MSB => Endian::Big,
            found => return Err(TargetError::InvalidByteOrder { found }),
        };
        if prefix[EI_VERSION_OFFSET] != EV_CURRENT {
            return Err(TargetError::InvalidVersion { found: prefix[EI_VERSION_OFFSET] });
        }

        let machine_bytes = [prefix[E_MACHINE_OFFSET], prefix[E_MACHINE_OFFSET + 1]];
        let machine = match endian {
            Endian::Little => u16::from_le_bytes(machine_bytes),
            Endian::Big => u16::from_be_bytes(machine_bytes),
        };
        let flags_offset = match bits {
            WordSize::Bits32 => E_FLAGS_OFFSET_32,
            WordSize::Bits64 => E_FLAGS_OFFSET_64,
        };
        let flags_bytes: Option<[u8; 4]> =
            header.get(flags_offset..flags_offset + 4).and_then(|bytes| bytes.try_into().ok());
        let flags = match (flags_bytes, endian) {
            (Some(bytes), Endian::Little) => u32::from_le_bytes(bytes),
            (Some(bytes), Endian::Big) => u32::from_be_bytes(bytes),
            (None, _) => 0,
        };

        Ok(TargetLayout { bits, endian, machine, flags })
    }

    /// Describes the target for people, for example "x86_64 (64-bit little-endian)", "armhf
    /// (32-bit little-endian)" or "machine 0x1234 (32-bit big-endian)" for a CPU this tool has no
    /// name for.
    pub fn describe(&self) -> String {
        let layout = format!("{} {}", self.bits, self.endian);
        match self.machine_name() {
            Some(name) => format!("{name} ({layout})"),
            None => format!("machine {:#06x} ({layout})", self.machine),
        }
    }

    /// Short name of the word size and byte order: "64le", "32le", "64be" or "32be".
    pub fn short_name(&self) -> &'static str {
        match (self.bits, self.endian) {
            (WordSize::Bits64, Endian::Little) => "64le",
            (WordSize::Bits32, Endian::Little) => "32le",
            (WordSize::Bits64, Endian::Big) => "64be",
            (WordSize::Bits32, Endian::Big) => "32be",
        }
    }

    /// Common name of the CPU architecture, or `None` for a machine number not listed here. The
    /// numbers are the `EM_*` constants of the System V ABI's ELF specification.
    fn machine_name(&self) -> Option<&'static str> {
        let is_64 = self.bits == WordSize::Bits64;
        let name = match self.machine {
            3 => "i386",
            4 => "m68k",
            8 if is_64 => "mips64",
            8 => "mips",
            20 => "powerpc",
            21 => "powerpc64",
            22 if is_64 => "s390x",
            22 => "s390",
            EM_ARM if self.flags & EF_ARM_ABI_FLOAT_HARD != 0 => "armhf",
            EM_ARM if self.flags & EF_ARM_ABI_FLOAT_SOFT != 0 => "armel",
            EM_ARM => "arm",
            42 => "superh",
            43 => "sparc64",
            62 if is_64 => "x86_64",
            62 => "x32",
            183 => "aarch64",
            243 if is_64 => "riscv64",
            243 => "riscv32",
            258 => "loongarch64",
            _ => return None,
        };
        Some(name)
    }
}

impl fmt::Display for TargetLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a 64-byte ELF header prefix with the given class, data encoding and machine number.
    fn crafted_header(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(&ELF_MAGIC);
        header[EI_CLASS_OFFSET] = class;
        header[EI_DATA_OFFSET] = data;
        header[EI_VERSION_OFFSET] = EV_CURRENT;
        let machine_bytes = if data == ELFDATA2MSB { machine.to_be_bytes() } else { machine.to_le_bytes() };
        header[E_MACHINE_OFFSET..E_MACHINE_OFFSET + 2].copy_from_slice(&machine_bytes);
        header
    }

    fn first_bytes_of(path: &str) -> Option<Vec<u8>> {
        use std::io::Read;
        let mut file = std::fs::File::open(path).ok()?;
        let mut header = vec![0u8; 64];
        file.read_exact(&mut header).ok()?;
        Some(header)
    }

    #[test]
    fn host_shell_is_read_as_host_layout() {
        let header = first_bytes_of("/bin/sh").expect("/bin/sh is readable");
        let layout = TargetLayout::from_elf_header(&header).unwrap();

        let expected_bits =
            if cfg!(target_pointer_width = "64") { WordSize::Bits64 } else { WordSize::Bits32 };
        let expected_endian = if cfg!(target_endian = "little") { Endian::Little } else { Endian::Big };
        assert_eq!(layout.bits, expected_bits);
        assert_eq!(layout.endian, expected_endian);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(layout.machine, 62);
            assert_eq!(layout.describe(), "x86_64 (64-bit little-endian)");
            assert_eq!(layout.short_name(), "64le");
        }
    }

    #[test]
    fn mender_client_binary_is_read() {
        let Some(mender) = crate::test_support::require_tool("mender", "mender_client_binary_is_read") else {
            return;
        };
        let header = first_bytes_of(mender.to_str().unwrap()).expect("the mender binary is readable");
        let layout = TargetLayout::from_elf_header(&header).unwrap();

        let host = TargetLayout::from_elf_header(&first_bytes_of("/bin/sh").unwrap()).unwrap();
        assert_eq!(layout, host);
    }

    #[test]
    fn arm_32_bit_little_endian_is_described() {
        let layout = TargetLayout::from_elf_header(&crafted_header(ELFCLASS32, ELFDATA2LSB, 40)).unwrap();

        assert_eq!(
            layout,
            TargetLayout { bits: WordSize::Bits32, endian: Endian::Little, machine: 40, flags: 0 }
        );
        assert_eq!(layout.describe(), "arm (32-bit little-endian)");
        assert_eq!(layout.short_name(), "32le");
    }

    #[test]
    fn arm_float_abi_is_read_from_flags() {
        let mut armhf = crafted_header(ELFCLASS32, ELFDATA2LSB, 40);
        armhf[E_FLAGS_OFFSET_32..E_FLAGS_OFFSET_32 + 4].copy_from_slice(&0x0500_0400u32.to_le_bytes());
        let mut armel = crafted_header(ELFCLASS32, ELFDATA2LSB, 40);
        armel[E_FLAGS_OFFSET_32..E_FLAGS_OFFSET_32 + 4].copy_from_slice(&0x0500_0200u32.to_le_bytes());

        let armhf = TargetLayout::from_elf_header(&armhf).unwrap();
        let armel = TargetLayout::from_elf_header(&armel).unwrap();

        assert_eq!(armhf.flags, 0x0500_0400);
        assert_eq!(armhf.describe(), "armhf (32-bit little-endian)");
        assert_eq!(armel.describe(), "armel (32-bit little-endian)");
        let short =
            TargetLayout::from_elf_header(&crafted_header(ELFCLASS32, ELFDATA2LSB, 40)[..20]).unwrap();
        assert_eq!(short.describe(), "arm (32-bit little-endian)");
    }

    #[test]
    fn mips_big_endian_machine_is_read_big_endian() {
        let header = crafted_header(ELFCLASS32, ELFDATA2MSB, 8);
        assert_eq!(&header[E_MACHINE_OFFSET..E_MACHINE_OFFSET + 2], &[0, 8]);

        let layout = TargetLayout::from_elf_header(&header).unwrap();

        assert_eq!(layout.machine, 8);
        assert_eq!(layout.endian, Endian::Big);
        assert_eq!(layout.describe(), "mips (32-bit big-endian)");
        assert_eq!(layout.short_name(), "32be");
    }

    #[test]
    fn aarch64_is_described() {
        let layout = TargetLayout::from_elf_header(&crafted_header(ELFCLASS64, ELFDATA2LSB, 183)).unwrap();

        assert_eq!(layout.describe(), "aarch64 (64-bit little-endian)");
        assert_eq!(layout.short_name(), "64le");
    }

    #[test]
    fn other_architectures_are_named() {
        let cases = [
            (ELFCLASS32, ELFDATA2LSB, 3, "i386 (32-bit little-endian)"),
            (ELFCLASS64, ELFDATA2MSB, 21, "powerpc64 (64-bit big-endian)"),
            (ELFCLASS64, ELFDATA2LSB, 21, "powerpc64 (64-bit little-endian)"),
            (ELFCLASS64, ELFDATA2LSB, 243, "riscv64 (64-bit little-endian)"),
            (ELFCLASS32, ELFDATA2LSB, 243, "riscv32 (32-bit little-endian)"),
            (ELFCLASS64, ELFDATA2MSB, 8, "mips64 (64-bit big-endian)"),
            (ELFCLASS32, ELFDATA2MSB, 0x1234, "machine 0x1234 (32-bit big-endian)"),
        ];
        for (class, data, machine, expected) in cases {
            let layout = TargetLayout::from_elf_header(&crafted_header(class, data, machine)).unwrap();
            assert_eq!(layout.describe(), expected, "machine {machine}");
        }
    }

    #[test]
    fn big_endian_64_bit_is_named() {
        let layout = TargetLayout::from_elf_header(&crafted_header(ELFCLASS64, ELFDATA2MSB, 21)).unwrap();

        assert_eq!(layout.short_name(), "64be");
    }

    #[test]
    fn truncated_header_is_rejected() {
        let header = crafted_header(ELFCLASS64, ELFDATA2LSB, 62);

        for len in [0, 1, 4, 16, ELF_HEADER_PREFIX_LEN - 1] {
            assert_eq!(TargetLayout::from_elf_header(&header[..len]), Err(TargetError::Truncated { len }));
        }
        assert!(TargetLayout::from_elf_header(&header[..ELF_HEADER_PREFIX_LEN]).is_ok());
    }

    #[test]
    fn non_elf_input_is_rejected() {
        let script = b"#!/bin/sh\necho this is a shell script, not a program\n";
        assert_eq!(
            TargetLayout::from_elf_header(script),
            Err(TargetError::NotElf { found: b"#!/b".to_vec() })
        );

        let short_text = b"#!/bin/sh";
        assert_eq!(
            TargetLayout::from_elf_header(short_text),
            Err(TargetError::NotElf { found: b"#!/b".to_vec() })
        );
    }

    #[test]
    fn invalid_identification_bytes_are_rejected() {
        let mut header = crafted_header(ELFCLASS64, ELFDATA2LSB, 62);
        header[EI_CLASS_OFFSET] = 3;
        assert_eq!(TargetLayout::from_elf_header(&header), Err(TargetError::InvalidClass { found: 3 }));

        let mut header = crafted_header(ELFCLASS64, ELFDATA2LSB, 62);
        header[EI_DATA_OFFSET] = 0;
        assert_eq!(TargetLayout::from_elf_header(&header), Err(TargetError::InvalidByteOrder { found: 0 }));

        let mut header = crafted_header(ELFCLASS64, ELFDATA2LSB, 62);
        header[EI_VERSION_OFFSET] = 2;
        assert_eq!(TargetLayout::from_elf_header(&header), Err(TargetError::InvalidVersion { found: 2 }));
    }
}
