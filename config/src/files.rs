//! Reading the files a config is made of — the config file, and the token, certificate,
//! key and CA files it names — as regular files only, each up to a limit, and the
//! named files together up to a budget. A path to `/dev/zero`, a FIFO, a directory or a
//! huge file is an error that costs nothing and blocks nothing.

use std::fs::File;
use std::io::Read;
use std::path::Path;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The most serin reads of a config file.
pub const MAX_CONFIG_FILE_BYTES: u64 = 4 * MIB;
/// The most serin reads of `admin.token_file` (a token is tens of bytes).
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 * KIB;
/// The most serin reads of a certificate chain or a private key (listeners' and
/// versions' `cert` and `key`): a chain is a few KiB.
pub const MAX_CERTIFICATE_FILE_BYTES: u64 = MIB;
/// The most serin reads of a CA bundle (a version's `tls.ca`): the whole Mozilla
/// bundle is about 220 KiB.
pub const MAX_CA_FILE_BYTES: u64 = 4 * MIB;
/// The most serin reads of all the files one config names, together (a file named
/// twice counts twice: each copy is kept).
pub const MAX_NAMED_FILES_BYTES: u64 = 64 * MIB;

/// Why a file was not read.
#[derive(Debug)]
pub(crate) enum Unreadable {
    /// Opening or reading it failed.
    Io(std::io::Error),
    /// It is not a regular file: what it is ("a FIFO").
    NotRegular(&'static str),
    /// It holds more than the limit, in bytes.
    TooLarge(u64),
}

/// The content of the regular file at `path`, if it holds at most `limit` bytes.
///
/// The file is opened without blocking (`O_NONBLOCK`: opening a FIFO with no writer
/// would otherwise wait for one) and what was opened is checked (`fstat`), so a file
/// swapped between a check and the open cannot slip through. Reading stops one byte
/// past the limit, whatever the file's size says (a file in /proc says 0).
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, Unreadable> {
    let file = open_nonblocking(path).map_err(Unreadable::Io)?;
    let metadata = file.metadata().map_err(Unreadable::Io)?;
    if !metadata.is_file() {
        return Err(Unreadable::NotRegular(kind_of(&metadata.file_type())));
    }
    if metadata.len() > limit {
        return Err(Unreadable::TooLarge(limit));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(Unreadable::Io)?;
    if bytes.len() as u64 > limit {
        return Err(Unreadable::TooLarge(limit));
    }
    Ok(bytes)
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// What a file that is not a regular file is, for an error.
fn kind_of(file_type: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// `bytes` as errors write a limit: `4 MiB`, `64 KiB`.
pub(crate) fn size_text(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// What is left of [`MAX_NAMED_FILES_BYTES`] while one config's files are read.
#[derive(Debug)]
pub(crate) struct Budget {
    left: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            left: MAX_NAMED_FILES_BYTES,
        }
    }
}

impl Budget {
    /// Takes `bytes` from what is left, or says (an error message) that the files
    /// named so far, with this one, add up to more than the budget.
    pub(crate) fn take(&mut self, bytes: usize, file: &Path) -> Result<(), String> {
        match self.left.checked_sub(bytes as u64) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(format!(
                "with {} the files this config names add up to more than {}, the most serin \
                 reads for one config; name fewer or smaller files (each file named is \
                 read, and kept, once per key that names it)",
                crate::error::ShownPath(&file.display().to_string()),
                size_text(MAX_NAMED_FILES_BYTES)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("serin-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    #[test]
    fn a_regular_file_within_the_limit_is_read_whole() {
        let path = temp("small");
        std::fs::write(&path, b"hello").expect("write");
        assert_eq!(read_limited(&path, 5).expect("read"), b"hello");
    }

    #[test]
    fn a_file_over_the_limit_is_refused() {
        let path = temp("large");
        std::fs::write(&path, b"hello!").expect("write");
        assert!(matches!(
            read_limited(&path, 5),
            Err(Unreadable::TooLarge(5))
        ));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn devices_directories_and_fifos_are_refused_without_reading_or_waiting() {
        assert!(matches!(
            read_limited(Path::new("/dev/zero"), MIB),
            Err(Unreadable::NotRegular("a character device"))
        ));
        assert!(matches!(
            read_limited(&std::env::temp_dir(), MIB),
            Err(Unreadable::NotRegular("a directory"))
        ));
        let fifo = temp("fifo");
        let _ = std::fs::remove_file(&fifo);
        let c_path = std::ffi::CString::new(fifo.display().to_string()).expect("no NUL");
        // SAFETY: mkfifo(3) reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // No writer: a blocking open would wait here forever.
        assert!(matches!(
            read_limited(&fifo, MIB),
            Err(Unreadable::NotRegular("a FIFO (named pipe)"))
        ));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_that_says_it_is_empty_is_still_read_only_up_to_the_limit() {
        // /proc files report a size of 0 whatever they hold.
        let read = read_limited(Path::new("/proc/self/maps"), 16);
        assert!(matches!(read, Err(Unreadable::TooLarge(16))), "{read:?}");
    }

    #[test]
    fn limits_read_as_units() {
        assert_eq!(size_text(MAX_CONFIG_FILE_BYTES), "4 MiB");
        assert_eq!(size_text(MAX_TOKEN_FILE_BYTES), "64 KiB");
        assert_eq!(size_text(1000), "1000 bytes");
    }

    #[test]
    fn the_budget_runs_out() {
        let mut budget = Budget::default();
        assert!(budget
            .take(MAX_NAMED_FILES_BYTES as usize, Path::new("a"))
            .is_ok());
        let err = budget.take(1, Path::new("b")).expect_err("over");
        assert!(err.starts_with("with b the files this config names add up to more than 64 MiB"));
    }
}
