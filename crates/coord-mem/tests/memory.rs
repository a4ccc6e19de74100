//! Memory stays bounded however many writes run: live heap bytes after many lock cycles are
//! below twice those after a few (history is compacted automatically). Counted by a global
//! allocator, so this binary holds this one test only.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use coord_mem::MemStore;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// The two tests of this binary share the counter: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn measure(history_limit: u64, few: u64, many: u64) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let base = live();
        let store = MemStore::builder().history_limit(history_limit).build();
        let mut session = common::Session::new(&store).await;
        for _ in 0..few {
            session.cycle().await;
        }
        let after_few = live() - base;
        for _ in few..many {
            session.cycle().await;
        }
        let after_many = live() - base;
        assert_eq!(session.events, many);
        assert!(
            after_many < 2 * after_few,
            "{after_few} bytes after {few} cycles, {after_many} after {many}"
        );
        eprintln!("history {history_limit}: {after_few} bytes after {few} cycles, {after_many} after {many}");
    });
}

#[test]
fn memory_is_bounded_by_the_history_limit() {
    // Default history (10,000 revisions = 5,000 cycles): 10,000 cycles vs 100,000.
    measure(10_000, 10_000, 100_000);
    // A small history, many more cycles relative to it.
    measure(100, 1_000, 50_000);
}

#[test]
#[ignore = "slow in debug builds; the full target: 10,000 vs 1,000,000 cycles"]
fn memory_after_a_million_cycles() {
    measure(10_000, 10_000, 1_000_000);
}
