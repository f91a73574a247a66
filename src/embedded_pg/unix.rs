//! Unix users and processes: who runs PostgreSQL when the service is
//! root, directory ownership and reachability, and `/proc` reads.

use std::{
    ffi::{CStr, CString},
    fs,
    os::unix::fs::MetadataExt,
    path::Path,
};

use anyhow::{Context as _, bail};

/// The system user the cluster runs as when the service runs as root.
#[derive(Debug, Clone)]
pub(super) struct SystemUser {
    pub(super) name: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// What `/proc/<pid>/stat` says of a process: its name and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessState {
    pub comm: String,
    pub state: char,
}

impl ProcessState {
    pub(super) fn is_postgres(&self) -> bool {
        self.comm == "postgres" || self.comm == "postmaster"
    }

    /// A zombie (state Z) has exited: it is not running. When it is our
    /// child (the service is PID 1 in a container and PostgreSQL was
    /// re-parented to it), reap it so its pid is freed.
    pub(super) fn is_zombie_reaped(&self, pid: u32) -> bool {
        if self.state != 'Z' {
            return false;
        }
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: waitpid with WNOHANG on a pid; a null status pointer
            // is allowed; ECHILD (not our child) is harmless.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        }
        true
    }
}

/// Reads `/proc/<pid>/stat` ("pid (comm) S ..."; comm may hold spaces and
/// parentheses, so it ends at the last ')').
pub fn process_state(pid: u32) -> Option<ProcessState> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let state = stat.get(close + 1..)?.trim_start().chars().next()?;
    Some(ProcessState { comm, state })
}

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Looks a system user up by name (getpwnam_r).
pub(super) fn lookup_user(name: &str) -> Option<SystemUser> {
    let c_name = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain old data; getpwnam_r fills it and points its
    // strings into `buf`, which outlives every use below.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the sizes given.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string in `buf`.
    let found = unsafe { CStr::from_ptr(pwd.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some(SystemUser {
        name: found,
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// PostgreSQL running as `user` must be able to enter every directory above
/// its own; say which one it cannot, rather than let initdb fail obscurely.
pub(super) fn check_reachable(dir: &Path, user: &SystemUser) -> anyhow::Result<()> {
    for ancestor in dir.ancestors() {
        let meta = fs::metadata(ancestor)
            .with_context(|| format!("cannot inspect {}", ancestor.display()))?;
        let mode = meta.mode();
        let can_enter = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !can_enter {
            bail!(
                "PostgreSQL runs as the '{}' user, which cannot enter {} (mode {:o}): choose a \
                 --data-dir it can reach, or allow it in (chmod o+x {})",
                user.name,
                ancestor.display(),
                mode & 0o7777,
                ancestor.display()
            );
        }
    }
    Ok(())
}

pub(super) fn chown_recursive(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_recursive(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
