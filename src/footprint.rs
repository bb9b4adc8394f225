//! Giving memory back when the daemon goes idle for a long wait.
//!
//! An idle daemon's resident memory is mostly pages it needed once: the code of start-up
//! (config parsing, the command line, TLS set-up) and of the last renewal, pulled in with the
//! kernel's fault-around, and heap freed after the last key generation. None of it is needed
//! until the next renewal, tens of minutes away. So after each burst of work the daemon asks the
//! kernel to reclaim the file-backed pages only it maps (`MADV_PAGEOUT`: clean code and
//! read-only data, read back from the page cache or the file when next used; pages other
//! processes share are left alone by the kernel), and glibc to return free heap
//! (`malloc_trim`). Nothing here changes behaviour; it can fail silently (older kernels lack
//! `MADV_PAGEOUT`) and the only cost is the next renewal faulting its code back in.

use std::num::NonZeroUsize;
use std::ptr::NonNull;

/// Reclaims what the daemon does not need while it waits. Best effort; never fails.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own free lists; any argument is valid.
    unsafe {
        nix::libc::malloc_trim(0);
    }
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for (start, len) in maps.lines().filter_map(reclaimable) {
        let (Some(addr), Some(len)) = (
            NonNull::new(start as *mut std::ffi::c_void),
            NonZeroUsize::new(len),
        ) else {
            continue;
        };
        // SAFETY: MADV_PAGEOUT on a file-backed, non-writable mapping of this process only
        // drops clean pages from its page tables; their contents are unchanged (read back from
        // the file on the next access), so no reference into them is invalidated.
        let _ = unsafe {
            nix::sys::mman::madvise(addr, len.get(), nix::sys::mman::MmapAdvise::MADV_PAGEOUT)
        };
    }
}

/// A `/proc/self/maps` line's range, if it is a file-backed mapping that is not writable (code
/// and read-only data: clean pages, safe to drop and read back).
fn reclaimable(line: &str) -> Option<(usize, usize)> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let _device = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next()?;
    if perms.as_bytes().get(1) != Some(&b'-') || inode == "0" || !path.starts_with('/') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    Some((start, end.checked_sub(start)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_file_mappings_are_reclaimable() {
        let text = "55d0c0a00000-55d0c0b00000 r-xp 00001000 fe:01 1234 /usr/bin/eit-certd";
        assert_eq!(reclaimable(text), Some((0x55d0c0a00000, 0x100000)));
        // Written data, the heap, anonymous memory, the stack and the vDSO stay.
        for line in [
            "55d0c0c00000-55d0c0c10000 rw-p 00100000 fe:01 1234 /usr/bin/eit-certd",
            "55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]",
            "7f0000000000-7f0000100000 rw-p 00000000 00:00 0",
            "7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]",
            "7ffc00100000-7ffc00102000 r-xp 00000000 00:00 0 [vdso]",
            "garbage",
            "",
        ] {
            assert_eq!(reclaimable(line), None, "{line}");
        }
    }

    #[test]
    fn trimming_leaves_the_process_working() {
        trim();
        // Code and read-only data come back on use.
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
        assert!(reclaimable("0-1000 r--p 0 fe:01 1 /x").is_some());
    }
}
