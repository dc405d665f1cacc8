//! Small helpers shared by the examples: flag parsing and number formatting.
#![allow(dead_code)]

pub mod cli;

use std::collections::BTreeMap;

/// `println!` that ends the program quietly (status 0) when standard output is closed, as
/// when the output is piped into `head`.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// `print!` with the same closed-pipe behaviour as `outln!`.
#[allow(unused_macros)]
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}
use std::str::FromStr;

/// Parsed command line: `--key value` pairs, bare `--flag`s and positionals.
pub struct Args {
    values: BTreeMap<String, String>,
    flags: Vec<String>,
    /// Arguments that are not flags, in order.
    pub positional: Vec<String>,
}

/// Print an error and exit with status 2.
pub fn die(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}

impl Args {
    /// Parse `std::env::args`. `value_flags` take a value, `bool_flags` do not; anything else
    /// starting with `--` is an error that prints `usage`.
    pub fn parse(value_flags: &[&str], bool_flags: &[&str], usage: &str) -> Args {
        let mut it = std::env::args().skip(1);
        let mut args = Args {
            values: BTreeMap::new(),
            flags: Vec::new(),
            positional: Vec::new(),
        };
        while let Some(a) = it.next() {
            if a == "--help" || a == "-h" {
                outln!("{usage}");
                std::process::exit(0);
            }
            if let Some(name) = a.strip_prefix("--") {
                let (name, inline) = match name.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (name.to_string(), None),
                };
                if value_flags.contains(&name.as_str()) {
                    let v = inline
                        .or_else(|| it.next())
                        .unwrap_or_else(|| die(&format!("--{name} needs a value\n{usage}")));
                    args.values.insert(name, v);
                } else if bool_flags.contains(&name.as_str()) {
                    args.flags.push(name);
                } else {
                    die(&format!("unknown flag --{name}\n{usage}"));
                }
            } else {
                args.positional.push(a);
            }
        }
        args
    }

    /// Whether a bare flag was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    /// Raw value of a flag.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Parsed value, if given; exits on a parse error.
    pub fn opt<T: FromStr>(&self, name: &str) -> Option<T> {
        self.raw(name).map(|v| {
            v.parse()
                .unwrap_or_else(|_| die(&format!("--{name}: cannot parse {v:?}")))
        })
    }

    /// Parsed value or a default.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> T {
        self.opt(name).unwrap_or(default)
    }

    /// An integer that may be written in scientific notation (`350e9`).
    pub fn opt_u64(&self, name: &str) -> Option<u64> {
        self.raw(name).map(|v| {
            v.parse::<u64>()
                .ok()
                .unwrap_or_else(|| match v.parse::<f64>() {
                    Ok(f) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 => {
                        f as u64
                    }
                    _ => die(&format!(
                        "--{name}: expected a non-negative integer, got {v:?}"
                    )),
                })
        })
    }

    /// [`Args::opt_u64`] with a default.
    pub fn get_u64(&self, name: &str, default: u64) -> u64 {
        self.opt_u64(name).unwrap_or(default)
    }

    /// A comma-separated list of integers.
    pub fn opt_list(&self, name: &str) -> Option<Vec<u64>> {
        self.raw(name).map(|v| {
            v.split(',')
                .map(|x| {
                    x.trim()
                        .parse()
                        .unwrap_or_else(|_| die(&format!("--{name}: bad list item {x:?}")))
                })
                .collect()
        })
    }
}

/// `1.23B`-style short form of a count; scientific notation beyond the trillions.
pub fn si(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() || a >= 1e15 {
        return format!("{x:.2e}");
    }
    let (v, s) = if a >= 1e12 {
        (x / 1e12, "T")
    } else if a >= 1e9 {
        (x / 1e9, "B")
    } else if a >= 1e6 {
        (x / 1e6, "M")
    } else if a >= 1e3 {
        (x / 1e3, "K")
    } else {
        (x, "")
    };
    format!("{v:.2}{s}")
}

/// Integer with thousands separators.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as GiB with two decimals.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Exit with the library error's message.
pub fn or_die<T>(r: lmshape::Result<T>) -> T {
    r.unwrap_or_else(|e| die(&e.to_string()))
}

/// Read and parse a Hugging Face `config.json`, exiting with the error's message on failure.
pub fn load_config(path: &str) -> lmshape::Transformer {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| die(&format!("cannot read {path}: {e}")));
    or_die(lmshape::model::hf::from_hf_config_str(&text))
}
