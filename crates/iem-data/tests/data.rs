//! Generators are seeded and shaped as stated; digits load; the IDX reader accepts files it
//! writes itself (raw and gzip) and rejects every malformed variant with the file's name.

use iem_data::idx;
use iem_data::synth::{Synth, generate};
use std::io::Write;

#[test]
fn generators_are_seeded_and_labelled() {
    let all = [
        Synth::Blobs { k: 4, per_class: 25, std: 0.2, radius: 2.0 },
        Synth::AnisoBlobs { k: 3, per_class: 20, std: 0.2, radius: 2.0 },
        Synth::Moons { per_class: 30, noise: 0.1 },
        Synth::Circles { per_class: 30, factor: 0.5, noise: 0.05 },
        Synth::Spirals { per_class: 30, noise: 0.02, turns: 1.5 },
        Synth::Checkerboard { n: 100, cells: 2 },
        Synth::UniformSquare { n: 50 },
        Synth::Polygon { n: 50, sides: 5 },
    ];
    for s in &all {
        let a = generate(s, 3);
        let b = generate(s, 3);
        let c = generate(s, 4);
        assert_eq!(a, b, "{} is not deterministic", a.name);
        assert_ne!(a.x, c.x, "{} ignores its seed", a.name);
        assert_eq!(a.x.cols(), 2);
        assert!(a.labels.iter().all(|&l| l < a.classes));
        assert!(!a.params.is_empty());
    }
    // blob samples sit around their recorded centres
    let b = generate(&all[0], 1);
    let c = b.centres.unwrap();
    for i in 0..b.x.rows() {
        let l = b.labels[i];
        let d =
            ((b.x.get(i, 0) - c.get(l, 0)).powi(2) + (b.x.get(i, 1) - c.get(l, 1)).powi(2)).sqrt();
        assert!(d < 1.5, "sample {i} is {d} from its centre");
    }
    // polygon samples are inside the unit circle
    let p = generate(&all[7], 2);
    assert!((0..p.x.rows()).all(|i| p.x.get(i, 0).hypot(p.x.get(i, 1)) <= 1.0 + 1e-6));
}

#[test]
fn digits_embedded() {
    let d = iem_data::digits::load().unwrap();
    assert_eq!(d.x.shape(), (1797, 64));
    assert!(d.x.as_slice().iter().all(|&v| (0.0..=1.0).contains(&v)));
    let mut counts = [0usize; 10];
    d.labels.iter().for_each(|&l| counts[l] += 1);
    assert!(counts.iter().all(|&c| (170..=190).contains(&c)), "{counts:?}");
    let (tr, te) = iem_data::prep::split(&d, 0.25, 1);
    assert_eq!(tr.x.rows() + te.x.rows(), 1797);
    let (m, s) = iem_data::prep::fit_standardizer(&tr.x);
    let z = iem_data::prep::apply_standardizer(&tr.x, &m, &s);
    assert!(z.col_means_f64().iter().all(|v| v.abs() < 1e-4));
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8], gz: bool) {
    if gz {
        let f = std::fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap();
    } else {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn idx_reader_accepts_good_and_names_bad_files() {
    let base = std::env::temp_dir().join(format!("iem-idx-{}", std::process::id()));
    for (case, gz) in [("raw", false), ("gz", true)] {
        let dir = base.join(case);
        std::fs::create_dir_all(&dir).unwrap();
        let imgs: Vec<u8> = (0..3 * 4 * 4).map(|i| (i * 5) as u8).collect();
        write(&dir, "train-images-idx3-ubyte", &idx_bytes(&[3, 4, 4], &imgs), gz);
        write(&dir, "train-labels-idx1-ubyte", &idx_bytes(&[3], &[1, 9, 0]), gz);
        let d = idx::load_split(&dir, "train", "mnist").unwrap();
        assert_eq!(d.x.shape(), (3, 16));
        assert_eq!(d.labels, vec![1, 9, 0]);
        assert!((d.x.get(0, 1) - 5.0 / 255.0).abs() < 1e-7);
    }
    let dir = base.join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let good_img = idx_bytes(&[2, 2, 2], &[0; 8]);
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        ("missing labels", good_img.clone(), vec![], "No such file"),
        (
            "wrong magic",
            {
                let mut b = good_img.clone();
                b[0] = 7;
                b
            },
            idx_bytes(&[2], &[0, 1]),
            "wrong magic",
        ),
        ("truncated header", good_img[..10].to_vec(), idx_bytes(&[2], &[0, 1]), "truncated"),
        (
            "truncated data",
            good_img[..18].to_vec(),
            idx_bytes(&[2], &[0, 1]),
            "need 8 bytes of data",
        ),
        ("count mismatch", good_img.clone(), idx_bytes(&[3], &[0, 1, 2]), "3 labels for 2 images"),
        ("label range", good_img.clone(), idx_bytes(&[2], &[0, 12]), "out of range"),
        ("tiny", vec![0, 0], idx_bytes(&[2], &[0, 1]), "truncated"),
    ];
    for (what, img, lab, needle) in cases {
        let _ = std::fs::remove_file(dir.join("train-labels-idx1-ubyte"));
        std::fs::write(dir.join("train-images-idx3-ubyte"), &img).unwrap();
        if !lab.is_empty() {
            std::fs::write(dir.join("train-labels-idx1-ubyte"), &lab).unwrap();
        }
        let e = idx::load_split(&dir, "train", "mnist").unwrap_err().to_string();
        assert!(e.contains(needle), "{what}: {e}");
        assert!(e.contains("train-"), "{what}: error must name the file: {e}");
    }
    std::fs::remove_dir_all(&base).unwrap();
}
