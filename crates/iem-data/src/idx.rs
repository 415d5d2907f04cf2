//! IDX files (MNIST, Fashion-MNIST): `magic (0x00 0x00 type ndim) | dims (u32 BE) | data`,
//! gzip-compressed or raw. Every problem is a [`DataError`] naming the file.

use crate::{DataError, Dataset};
use flate2::read::GzDecoder;
use iem_tensor::Matrix;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The environment variable naming the MNIST directory when no flag is given.
pub const MNIST_ENV: &str = "IEM_MNIST_DIR";
/// The environment variable naming the Fashion-MNIST directory.
pub const FASHION_ENV: &str = "IEM_FASHION_MNIST_DIR";

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let p = path.display().to_string();
    let raw =
        std::fs::read(path).map_err(|e| DataError::Io { path: p.clone(), error: e.to_string() })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Format { path: p, problem: format!("gzip stream: {e}") })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX file of unsigned bytes: returns its dimensions and data.
pub fn parse(bytes: &[u8], path: &str) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let fail = |problem: String| DataError::Format { path: path.to_string(), problem };
    if bytes.len() < 4 {
        return Err(fail(format!("truncated: {} bytes, no IDX header", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(fail(format!(
            "wrong magic {:02x}{:02x}{:02x}{:02x}: not an IDX file",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    if bytes[2] != 0x08 {
        return Err(fail(format!("element type 0x{:02x} is not unsigned bytes (0x08)", bytes[2])));
    }
    let nd = bytes[3] as usize;
    if nd == 0 || nd > 4 {
        return Err(fail(format!("{nd} dimensions")));
    }
    if bytes.len() < 4 + 4 * nd {
        return Err(fail("truncated inside the dimension list".into()));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| fail(format!("dimensions {dims:?} overflow")))?;
    let data = &bytes[4 + 4 * nd..];
    if data.len() != count {
        return Err(fail(format!(
            "dimensions {dims:?} need {count} bytes of data, the file has {}",
            data.len()
        )));
    }
    Ok((dims, data.to_vec()))
}

fn find(dir: &Path, stem: &str) -> PathBuf {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.exists() { gz } else { dir.join(stem) }
}

/// Loads one split (`train` or `t10k`) of an MNIST-format directory: images scaled to
/// `[0, 1]`, flattened to 784 columns; labels checked to be below 10 and as many as images.
pub fn load_split(dir: &Path, split: &str, name: &str) -> Result<Dataset, DataError> {
    let ip = find(dir, &format!("{split}-images-idx3-ubyte"));
    let lp = find(dir, &format!("{split}-labels-idx1-ubyte"));
    let (idims, img) = parse(&read_file(&ip)?, &ip.display().to_string())?;
    let (ldims, lab) = parse(&read_file(&lp)?, &lp.display().to_string())?;
    let ipath = ip.display().to_string();
    if idims.len() != 3 {
        return Err(DataError::Format {
            path: ipath,
            problem: format!("images need 3 dimensions, found {idims:?}"),
        });
    }
    if ldims.len() != 1 {
        return Err(DataError::Format {
            path: lp.display().to_string(),
            problem: format!("labels need 1 dimension, found {ldims:?}"),
        });
    }
    if ldims[0] != idims[0] {
        return Err(DataError::Format {
            path: lp.display().to_string(),
            problem: format!("{} labels for {} images", ldims[0], idims[0]),
        });
    }
    if let Some((i, &l)) = lab.iter().enumerate().find(|(_, l)| **l >= 10) {
        return Err(DataError::Format {
            path: lp.display().to_string(),
            problem: format!("label {l} of item {i} is out of range 0..10"),
        });
    }
    let d = idims[1] * idims[2];
    let x = Matrix::from_vec(idims[0], d, img.iter().map(|&p| p as f32 / 255.0).collect())
        .map_err(|e| DataError::Format { path: ipath, problem: e.to_string() })?;
    Ok(Dataset {
        name: name.into(),
        x,
        labels: lab.iter().map(|&l| l as usize).collect(),
        classes: 10,
        centres: None,
        params: Default::default(),
    })
}

/// The directory given by `flag`, else by the environment variable `env`, else `None`.
pub fn resolve_dir(flag: Option<&Path>, env: &str) -> Option<PathBuf> {
    flag.map(Path::to_path_buf).or_else(|| std::env::var_os(env).map(PathBuf::from))
}
