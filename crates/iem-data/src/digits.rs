//! The UCI optical recognition of handwritten digits data set (E. Alpaydin, C. Kaynak, 1998;
//! UCI Machine Learning Repository, CC BY 4.0), in the 1,797-sample 8×8 form scikit-learn
//! packages: 64 pixel counts in `0..=16`, then the label. Embedded in the binary.

use crate::{DataError, Dataset};
use flate2::read::GzDecoder;
use iem_tensor::Matrix;
use std::io::Read;

const DIGITS_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

/// Loads the embedded digits, pixels scaled to `[0, 1]` (divided by 16).
pub fn load() -> Result<Dataset, DataError> {
    let path = "embedded digits.csv.gz".to_string();
    let mut text = String::new();
    GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|e| DataError::Format { path: path.clone(), problem: format!("gzip: {e}") })?;
    let mut x = Vec::with_capacity(1797 * 64);
    let mut labels = Vec::with_capacity(1797);
    for (line_no, line) in text.lines().enumerate() {
        let vals: Vec<&str> = line.split(',').collect();
        if vals.len() != 65 {
            return Err(DataError::Format {
                path,
                problem: format!("line {}: {} fields, expected 65", line_no + 1, vals.len()),
            });
        }
        for v in &vals[..64] {
            let p: f32 = v.trim().parse().map_err(|_| DataError::Format {
                path: path.clone(),
                problem: format!("line {}: bad pixel {v:?}", line_no + 1),
            })?;
            x.push(p / 16.0);
        }
        let l: f32 = vals[64].trim().parse().map_err(|_| DataError::Format {
            path: path.clone(),
            problem: format!("line {}: bad label", line_no + 1),
        })?;
        labels.push(l as usize);
    }
    let n = labels.len();
    Ok(Dataset {
        name: "digits".into(),
        x: Matrix::from_vec(n, 64, x)
            .map_err(|e| DataError::Format { path, problem: e.to_string() })?,
        labels,
        classes: 10,
        centres: None,
        params: Default::default(),
    })
}
