//! The data directory's claim: one process owns (serves) a data
//! directory; others use its cluster as guests.

use std::{
    fs,
    io::{Read, Seek, SeekFrom, Write},
    os::fd::AsRawFd,
    path::Path,
};

use anyhow::Context as _;

/// An exclusive claim on a file under the data directory: an `flock` held
/// for as long as this value lives (the kernel drops it when the process
/// dies, so a killed owner never leaves a stale claim). The file names the
/// holder, for the error of whoever finds it taken.
#[derive(Debug)]
pub struct DirLock {
    _file: fs::File,
}

impl DirLock {
    fn open(path: &Path) -> anyhow::Result<fs::File> {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open lock file {}", path.display()))
    }

    /// Takes the lock unless another process holds it; then `Err` names
    /// the holder ("pid 4242 (kpi-service serve)").
    pub fn try_acquire(path: &Path, holder: &str) -> anyhow::Result<Result<Self, String>> {
        let mut file = Self::open(path)?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                // The holder writes its name right after taking the lock:
                // give it a moment (two starts at once meet here).
                let mut named = String::new();
                for _ in 0..50 {
                    named.clear();
                    file.seek(SeekFrom::Start(0)).ok();
                    file.read_to_string(&mut named).ok();
                    if !named.trim().is_empty() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                let named = named.trim();
                return Ok(Err(if named.is_empty() {
                    "another process".to_owned()
                } else {
                    named.to_owned()
                }));
            }
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        write!(file, "pid {} ({holder})", std::process::id())?;
        file.flush()?;
        Ok(Ok(Self { _file: file }))
    }

    /// Waits for the lock (another process may hold it for a few seconds,
    /// as while it creates the cluster).
    pub fn acquire(path: &Path) -> anyhow::Result<Self> {
        let file = Self::open(path)?;
        loop {
            // SAFETY: as above.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Self { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
    }
}
