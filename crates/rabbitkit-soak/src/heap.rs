//! Live heap bytes (allocated and not yet freed), from the soak's global
//! allocator: a counting wrapper of the system allocator by default, dhat
//! with the `dhat-heap` feature (which also names the allocation sites still
//! live at the end).

use std::path::Path;

pub use imp::{finish, live, start};

/// Live bytes and blocks now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    pub bytes: u64,
    pub blocks: u64,
}

#[cfg(not(feature = "dhat-heap"))]
mod imp {
    use super::{Live, Path};
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    static BYTES: AtomicU64 = AtomicU64::new(0);
    static BLOCKS: AtomicU64 = AtomicU64::new(0);

    /// The system allocator, counting live bytes and blocks.
    struct Counting;

    // SAFETY: every call is forwarded unchanged to `System`; only counters
    // are added.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract is passed on as is.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                BYTES.fetch_add(layout.size() as u64, Relaxed);
                BLOCKS.fetch_add(1, Relaxed);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract is passed on as is.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                BYTES.fetch_add(layout.size() as u64, Relaxed);
                BLOCKS.fetch_add(1, Relaxed);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract is passed on as is.
            unsafe { System.dealloc(ptr, layout) };
            BYTES.fetch_sub(layout.size() as u64, Relaxed);
            BLOCKS.fetch_sub(1, Relaxed);
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the caller's contract is passed on as is.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                BYTES.fetch_add(new_size as u64, Relaxed);
                BYTES.fetch_sub(layout.size() as u64, Relaxed);
            }
            p
        }
    }

    #[global_allocator]
    static ALLOC: Counting = Counting;

    /// Nothing to keep without dhat.
    pub struct Profiler;

    pub fn start(_path: &Path) -> Profiler {
        Profiler
    }

    pub fn live() -> Option<Live> {
        Some(Live {
            bytes: BYTES.load(Relaxed),
            blocks: BLOCKS.load(Relaxed),
        })
    }

    pub fn finish(_profiler: Profiler) {}
}

#[cfg(feature = "dhat-heap")]
mod imp {
    use super::{Live, Path};
    use std::path::PathBuf;
    use std::sync::Mutex;

    #[global_allocator]
    static ALLOC: dhat::Alloc = dhat::Alloc;

    /// Whether the profiler runs (`HeapStats::get` panics when it does not).
    static RUNNING: Mutex<bool> = Mutex::new(false);

    /// The running dhat profiler and where it writes its JSON.
    pub struct Profiler {
        inner: dhat::Profiler,
        path: PathBuf,
    }

    pub fn start(path: &Path) -> Profiler {
        let inner = dhat::Profiler::builder()
            .file_name(path)
            .trim_backtraces(Some(40))
            .build();
        *RUNNING.lock().unwrap() = true;
        Profiler {
            inner,
            path: path.to_path_buf(),
        }
    }

    pub fn live() -> Option<Live> {
        let running = RUNNING.lock().unwrap();
        running.then(|| {
            let s = dhat::HeapStats::get();
            Live {
                bytes: s.curr_bytes as u64,
                blocks: s.curr_blocks as u64,
            }
        })
    }

    /// Stops the profiler (dhat writes its JSON), then prints the sites
    /// that hold the most bytes still live.
    pub fn finish(profiler: Profiler) {
        {
            let mut running = RUNNING.lock().unwrap();
            *running = false;
            drop(profiler.inner);
        }
        if let Err(e) = print_live_sites(&profiler.path) {
            eprintln!("reading {}: {e}", profiler.path.display());
        }
    }

    fn print_live_sites(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
        let frames: Vec<&str> = json["ftbl"]
            .as_array()
            .ok_or("no ftbl")?
            .iter()
            .map(|f| f.as_str().unwrap_or("?"))
            .collect();
        let mut pps: Vec<&serde_json::Value> =
            json["pps"].as_array().ok_or("no pps")?.iter().collect();
        let at_end = |pp: &serde_json::Value| pp["eb"].as_u64().unwrap_or(0);
        pps.sort_by_key(|pp| std::cmp::Reverse(at_end(pp)));
        let total: u64 = pps.iter().map(|pp| at_end(pp)).sum();
        let blocks: u64 = pps.iter().map(|pp| pp["ebk"].as_u64().unwrap_or(0)).sum();
        println!(
            "\nLive at the end of the run (dhat, {}): {total} bytes in {blocks} blocks; the sites holding most:",
            path.display()
        );
        for pp in pps.iter().take(15) {
            println!(
                "- {} bytes in {} blocks (allocated over the run: {} bytes in {} blocks)",
                at_end(pp),
                pp["ebk"].as_u64().unwrap_or(0),
                pp["tb"].as_u64().unwrap_or(0),
                pp["tbk"].as_u64().unwrap_or(0)
            );
            let shown = pp["fs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| frames.get(i.as_u64()? as usize))
                .map(|f| f.split_once(": ").map(|(_, name)| name).unwrap_or(f))
                .filter(|f| !boring(f))
                .take(6);
            for f in shown {
                println!("    {f}");
            }
        }
        Ok(())
    }

    /// Frames of the allocator and of the standard library, which say
    /// nothing about who allocates. A frame reads `function (file:line)`;
    /// the standard library's files are relative (`alloc/src/…`,
    /// `src/vec/…`), a crate's start with its directory (`lapin-4.12.3/…`,
    /// `rabbitkit-core/…`).
    fn boring(frame: &str) -> bool {
        let file = frame
            .rsplit_once(" (")
            .map(|(_, file)| file)
            .unwrap_or(frame);
        let from_crate = file.starts_with("rabbitkit")
            || file
                .split('/')
                .next()
                .and_then(|dir| dir.rsplit_once('-'))
                .is_some_and(|(_, version)| version.starts_with(|c: char| c.is_ascii_digit()));
        !from_crate || file.starts_with("dhat-") || file.starts_with("rabbitkit-soak/src/heap.rs")
    }
}
