//! Small helpers shared by the examples: the command-line pieces ([`cli`]), number formatting,
//! and output that ends quietly when its pipe closes.
#![allow(dead_code)]

pub mod cli;
pub mod scenario;

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

/// The command line as the example's parser reads it: under the `lmshape` command
/// (`lmshape plan --gpus 64`), the subcommand joins the program's name so that the example
/// sees only its own flags.
pub fn args() -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let under_cli = a.first().is_some_and(|p| {
        std::path::Path::new(p)
            .file_stem()
            .is_some_and(|s| s == "lmshape")
    });
    if under_cli && a.len() > 1 {
        let sub = a.remove(1);
        let mut name = std::ffi::OsString::from("lmshape ");
        name.push(sub);
        a[0] = name;
    }
    a
}

/// The value the command line gives `flag` (`--flag VALUE` or `--flag=VALUE`; empty when it
/// ends at the flag), read before the flags are parsed so that defaults can follow it.
pub fn flag_value(flag: &str) -> Option<String> {
    let args: Vec<String> = args()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&prefix)
            .map(str::to_string)
            .or_else(|| (a == flag).then(|| args.get(i + 1).cloned().unwrap_or_default()))
    })
}

/// Parse the command line ([`args`]) into `T`, exiting with clap's message on an error.
pub fn parse<T: clap::Parser>() -> T {
    T::parse_from(args())
}

/// Print an error and exit with status 2.
pub fn die(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
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

/// Read a text file of at most [`lmshape::error::MAX_INPUT_BYTES`], exiting with a message
/// that names the path when it cannot be read, is larger, or is not UTF-8 text.
pub fn read_input(path: &str) -> String {
    use std::io::Read as _;
    let limit = lmshape::error::MAX_INPUT_BYTES;
    let file =
        std::fs::File::open(path).unwrap_or_else(|e| die(&format!("cannot read {path}: {e}")));
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| die(&format!("cannot read {path}: {e}")));
    if bytes.len() > limit {
        die(&format!(
            "{path} is larger than {} MiB; is it the right file?",
            limit >> 20
        ));
    }
    String::from_utf8(bytes).unwrap_or_else(|_| die(&format!("{path} is not UTF-8 text")))
}

/// Read and parse a Hugging Face `config.json`, exiting with the error's message on failure.
pub fn load_config(path: &str) -> lmshape::Transformer {
    or_die(lmshape::model::hf::from_hf_config_str(&read_input(path)))
}

/// The header of a mixture-of-experts shape's columns (see [`moe_shape_columns`]).
pub const MOE_SHAPE_HEADER: &str = "layers hidden heads    E   k  width shared";

/// A mixture-of-experts shape as table columns: layers, width, heads, routed experts, experts
/// per token, expert width, shared experts (`None` for a dense model).
pub fn moe_shape_columns(m: &lmshape::Transformer) -> Option<String> {
    let e = m.moe()?;
    Some(format!(
        "{:>6} {:>6} {:>5} {:>4} {:>3} {:>6} {:>6}",
        m.num_layers(),
        m.hidden_size(),
        m.num_heads(),
        e.num_experts,
        e.top_k,
        e.expert_ffn_size,
        e.num_shared_experts
    ))
}
