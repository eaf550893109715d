//! The client wasm's allocator: power-of-two size classes, each with a free list, carved from
//! pages taken with `memory.grow`.
//!
//! Rust's default allocator on wasm (dlmalloc) costs 3.3 KB gzipped, a sixth of the client's
//! whole budget (`cargo xtask bench size`). The client's allocations are small and short-lived
//! (a URL, an error message, a chunk of server-sent events), so size classes without splitting
//! or coalescing serve them well: a freed block waits on its class's list for the next request
//! of that class. A block of class `c` is `2^c` bytes and aligned to `2^c`, so it satisfies any
//! alignment up to its size. The engine's module (feature `webgpu`), which allocates large
//! buffers, keeps dlmalloc.
//!
//! Single-threaded, as wasm32 without atomics is.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

/// The smallest block: room for the free list's link, and the alignment of every Rust primitive.
const MIN_CLASS: u32 = 4;
const CLASSES: usize = usize::BITS as usize;
const PAGE: usize = 65536;

struct State {
    /// Head of each class's free list (0: empty); a free block's first word links to the next.
    free: [usize; CLASSES],
    /// The untouched rest of the pages taken so far: `[next, end)`.
    next: usize,
    end: usize,
}

struct SizeClasses(UnsafeCell<State>);

// SAFETY: the client's wasm is single-threaded; nothing else can reach this state.
unsafe impl Sync for SizeClasses {}

/// The class of an allocation: its size and alignment, rounded up to a power of two.
fn class_of(layout: Layout) -> u32 {
    let size = layout.size().max(layout.align()).max(1 << MIN_CLASS);
    size.next_power_of_two().trailing_zeros()
}

impl SizeClasses {
    /// A fresh `2^class`-byte block from the untouched pages, taking more pages when needed.
    ///
    /// # Safety
    /// Only called from this allocator's entry points (no other borrow of the state is live).
    unsafe fn carve(&self, class: u32) -> *mut u8 {
        let s = unsafe { &mut *self.0.get() };
        let size = 1usize << class;
        let start = (s.next + size - 1) & !(size - 1);
        if start >= s.next && start.checked_add(size).is_some_and(|end| end <= s.end) {
            s.next = start + size;
            return start as *mut u8;
        }
        // Not enough left: take pages for this block (aligned) and keep the rest for later.
        let pages = (size + size.max(PAGE)) / PAGE;
        let old = core::arch::wasm32::memory_grow(0, pages);
        if old == usize::MAX {
            return core::ptr::null_mut();
        }
        let base = old * PAGE;
        if base != s.end {
            // Someone else grew memory in between: start over at the new pages.
            s.next = base;
        }
        s.end = base + pages * PAGE;
        let start = (s.next + size - 1) & !(size - 1);
        s.next = start + size;
        start as *mut u8
    }
}

unsafe impl GlobalAlloc for SizeClasses {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let class = class_of(layout);
        if class as usize >= CLASSES - 1 {
            return core::ptr::null_mut();
        }
        let s = unsafe { &mut *self.0.get() };
        let head = s.free[class as usize];
        if head != 0 {
            // SAFETY: `head` is a free block of this class; its first word is the next link.
            s.free[class as usize] = unsafe { *(head as *const usize) };
            return head as *mut u8;
        }
        unsafe { self.carve(class) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let class = class_of(layout) as usize;
        let s = unsafe { &mut *self.0.get() };
        // SAFETY: the block is ours, at least 16 bytes, and no longer used by its owner.
        unsafe { *(ptr as *mut usize) = s.free[class] };
        s.free[class] = ptr as usize;
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees the layout is valid for `new_size`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if class_of(new_layout) == class_of(layout) {
            return ptr;
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and at least `min(old, new)` bytes long.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: SizeClasses = SizeClasses(UnsafeCell::new(State {
    free: [0; CLASSES],
    next: 0,
    end: 0,
}));
