//! Writing files so that a crash never leaves a half-written one under the real name: a
//! temporary file in the same folder, fsync, then rename over the destination. Folders (model
//! checkpoints, training outputs) the same way as a whole: a temporary folder beside the
//! destination, filled, synced, then swapped into place.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically, creating the folder if needed. The file is readable by
/// everyone (0644), like any file a user would write, not private like a temporary file.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, bytes, true)
}

/// Like [`write`], but never replaces an existing file: that is an error naming it.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, bytes, false)
}

fn write_with(path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let perms = std::fs::Permissions::from_mode(0o644);
        tmp.as_file()
            .set_permissions(perms)
            .map_err(|e| Error::io(path, e))?;
    }
    if replace {
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    } else {
        tmp.persist_noclobber(path)
            .map_err(|e| Error::io(path, e.error))?;
    }
    Ok(())
}

/// Whether `dir` holds a model checkpoint (its `config.json`).
pub fn is_model_dir(dir: &Path) -> bool {
    dir.join(crate::model::checkpoint::CONFIG).is_file()
}

/// Refuses to write a model folder at `dest` unless that is safe: a missing or empty folder is
/// fine, an existing model only with `force`, and anything else (a file, a folder of other
/// things) never, since replacing it would delete what it holds. Errors name `out`.
pub fn check_out_dir(dest: &Path, force: bool) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(dest) else {
        return Ok(());
    };
    if !meta.is_dir() {
        return Err(Error::invalid(
            "out",
            format!("{} exists and is not a folder", dest.display()),
        ));
    }
    let empty = std::fs::read_dir(dest)
        .map_err(|e| Error::io(dest, e))?
        .next()
        .is_none();
    if empty {
        return Ok(());
    }
    if !is_model_dir(dest) {
        return Err(Error::invalid(
            "out",
            format!(
                "{} is a folder that holds no model (no config.json): choose another output \
                 folder rather than replace what it holds",
                dest.display()
            ),
        ));
    }
    if !force {
        return Err(Error::invalid(
            "out",
            format!(
                "{} already holds a model; `force` replaces it",
                dest.display()
            ),
        ));
    }
    Ok(())
}

/// Refuses to replace an existing file at `dest` unless `force`. Errors name `out`.
pub fn check_out_file(dest: &Path, force: bool) -> Result<()> {
    match std::fs::symlink_metadata(dest) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => Err(Error::invalid(
            "out",
            format!("{} is a folder, not a file", dest.display()),
        )),
        Ok(_) if force => Ok(()),
        Ok(_) => Err(Error::invalid(
            "out",
            format!("{} exists; `force` replaces it", dest.display()),
        )),
    }
}

/// The folder `dest` is in (`.` for a bare name), and its last component.
fn split(dest: &Path) -> Result<(PathBuf, String)> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            Error::invalid("out", format!("{} does not name a folder", dest.display()))
        })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// Where a folder for `dest` is prepared: `.NAME.SUFFIX` beside it (same file system, so the
/// final rename is atomic).
pub fn sibling(dest: &Path, suffix: &str) -> Result<PathBuf> {
    let (parent, name) = split(dest)?;
    Ok(parent.join(format!(".{name}.{suffix}")))
}

/// Writes the folder `dest` as a whole: `fill` writes into a fresh temporary folder beside it,
/// which is synced and then takes `dest`'s place (an existing folder is swapped out and
/// removed). A crash at any point leaves either the old folder or the new one under `dest`
/// (and perhaps a hidden temporary folder beside it), never a mix of the two.
pub fn write_dir(dest: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (parent, name) = split(dest)?;
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;
    fill(tmp.path())?;
    publish_dir(tmp.path(), dest)?;
    // Whatever is left at the temporary path (the old folder, after a swap) goes with it.
    drop(tmp);
    Ok(())
}

/// Moves the finished folder `src` to `dest` in one step, replacing any folder there: `src`
/// and its files are synced, made readable (0755), then exchanged with `dest` atomically where
/// the system allows (Linux), else `dest` is moved aside first. Afterwards `src` holds the old
/// folder (or nothing) and is removed.
pub fn publish_dir(src: &Path, dest: &Path) -> Result<()> {
    sync_tree(src)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(src, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(src, e))?;
    }
    let (parent, _) = split(dest)?;
    if std::fs::symlink_metadata(dest).is_err() {
        std::fs::rename(src, dest).map_err(|e| Error::io(dest, e))?;
    } else if !exchange(src, dest)? {
        // No atomic exchange here: move the old folder aside, then the new one in.
        let old = sibling(dest, &format!("old-{}", std::process::id()))?;
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dest, &old).map_err(|e| Error::io(dest, e))?;
        std::fs::rename(src, dest).map_err(|e| Error::io(dest, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    let _ = std::fs::remove_dir_all(src);
    sync_dir(&parent);
    Ok(())
}

/// Swaps two paths atomically. `Ok(false)` when the system cannot (not Linux, or a file system
/// without `RENAME_EXCHANGE`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let cs = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::invalid("out", format!("{} has a NUL byte", p.display())))
    };
    let (ca, cb) = (cs(a)?, cs(b)?);
    // SAFETY: two valid NUL-terminated paths, relative to the current directory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(Error::io(b, err)),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> Result<bool> {
    Ok(false)
}

/// fsyncs every file under `dir` and the folders themselves, so the rename that publishes them
/// never exposes data still in flight.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            sync_tree(&path)?;
        } else if meta.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    sync_dir(dir);
    Ok(())
}

/// Best effort: some file systems refuse to sync a folder.
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Copies the files and folders under `src` into `dst` (created), for continuing a finished
/// run's output in a fresh temporary folder.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(|e| Error::io(dst, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| Error::io(src, e))? {
        let path = entry.map_err(|e| Error::io(src, e))?.path();
        let to = dst.join(path.file_name().unwrap_or_default());
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            copy_tree(&path, &to)?;
        } else if meta.is_file() {
            std::fs::copy(&path, &to).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn folders_are_replaced_as_a_whole() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("model");
        write_dir(&dest, |d| {
            std::fs::write(d.join("config.json"), "old").unwrap();
            std::fs::write(d.join("weights"), "old").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(names(&dest), ["config.json", "weights"]);
        // A fill that fails leaves the old folder untouched and no temporary one behind.
        let e = write_dir(&dest, |d| {
            std::fs::write(d.join("config.json"), "new").unwrap();
            Err(Error::Failed("interrupted".into()))
        });
        assert!(e.is_err());
        assert_eq!(
            std::fs::read_to_string(dest.join("config.json")).unwrap(),
            "old"
        );
        assert_eq!(names(root.path()), ["model"]);
        // A complete one replaces everything, and the old files are gone.
        write_dir(&dest, |d| {
            std::fs::write(d.join("config.json"), "new").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(names(&dest), ["config.json"]);
        assert_eq!(names(root.path()), ["model"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755);
        }
    }

    #[test]
    fn outputs_are_not_replaced_without_force() {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("m");
        std::fs::create_dir(&model).unwrap();
        check_out_dir(&model, false).unwrap();
        std::fs::write(model.join("config.json"), "{}").unwrap();
        let e = check_out_dir(&model, false).unwrap_err().to_string();
        assert!(
            e.starts_with("out: ") && e.contains("already holds a model"),
            "{e}"
        );
        check_out_dir(&model, true).unwrap();
        let other = root.path().join("photos");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("cat.jpg"), "meow").unwrap();
        for force in [false, true] {
            let e = check_out_dir(&other, force).unwrap_err().to_string();
            assert!(e.contains("holds no model"), "{e}");
        }
        let file = root.path().join("t.bin");
        check_out_file(&file, false).unwrap();
        std::fs::write(&file, "x").unwrap();
        assert!(check_out_file(&file, false).is_err());
        check_out_file(&file, true).unwrap();
        assert!(check_out_dir(&file, true).is_err());
    }
}
