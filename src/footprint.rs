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

/// Reclaims what the daemon does not need while it waits. Best effort; never fails. Returns
/// how many mappings the kernel took the advice for (0 where `MADV_PAGEOUT` is unknown).
pub fn trim() -> usize {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own free lists; any argument is valid.
    unsafe {
        nix::libc::malloc_trim(0);
    }
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0;
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
        let done = unsafe {
            nix::sys::mman::madvise(addr, len.get(), nix::sys::mman::MmapAdvise::MADV_PAGEOUT)
        };
        advised += usize::from(done.is_ok());
    }
    advised
}

/// A `/proc/self/maps` line's range, if it is a file-backed mapping that is not writable (code
/// and read-only data: pages the kernel can drop and read back, or swap out where they were
/// written before being made read-only, as relocations are; either way nothing is lost).
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
    fn guard_regions_and_deleted_files_are_advised_harmlessly() {
        // No access: no pages to drop; a deleted file stays readable while mapped.
        for line in [
            "7f0000000000-7f0000001000 ---p 00000000 fe:01 1234 /usr/lib/libx.so",
            "7f0000001000-7f0000002000 r-xp 00000000 fe:01 1235 /usr/lib/liby.so (deleted)",
        ] {
            assert!(reclaimable(line).is_some(), "{line}");
        }
    }

    /// Resident KiB of this test binary's own mappings.
    fn own_code_resident() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut ours = false;
        let mut kib = 0;
        for line in smaps.lines() {
            if line
                .split_whitespace()
                .next()
                .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
            {
                ours = line.split_whitespace().nth(5) == exe.to_str();
            } else if let Some(rest) = line.strip_prefix("Rss:").filter(|_| ours) {
                kib += rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            }
        }
        kib
    }

    #[test]
    fn trimming_gives_back_code_and_leaves_the_process_working() {
        let before = own_code_resident();
        let advised = trim();
        let after = own_code_resident();
        if advised == 0 {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: footprint: this kernel takes no MADV_PAGEOUT advice"
            );
        } else {
            assert!(
                after < before,
                "resident code {before} KiB before, {after} KiB after"
            );
        }
        // Code and read-only data come back on use.
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
        assert!(own_code_resident() > 0);
    }
}
