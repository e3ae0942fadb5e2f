// Package logfile keeps the log files of containers under a size cap: the
// shim (containerd) or the SDK (process runtime) appends, and the newest
// output is kept.
package logfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Log files and their cap.
//
// Each container's stdout and stderr go to one file, <LogDir>/<namespace>/<id>.log.
// Containerd's shim writes that file itself (a file:// log URI, opened with
// O_APPEND), so output keeps flowing while the SDK process is down or
// restarting, and nothing has to be re-attached. The cap is enforced on the
// SDK side: when the file grows past half the cap, its oldest bytes are
// dropped so that about half the cap, the newest output, remains.
//
//   - On filesystems that can cut the head off a file (ext4, xfs:
//     fallocate FALLOC_FL_COLLAPSE_RANGE) this is done in place, rounded to
//     the filesystem block, and loses nothing the container writes
//     meanwhile: the kernel serialises it with the shim's appends.
//   - Elsewhere (tmpfs, overlayfs) the newest half is copied to
//     <id>.log.1 and <id>.log is truncated (copytruncate); output written
//     between the last copy and the truncation is lost.
//
// Logs returns <id>.log.1 (if any) followed by <id>.log: at most the cap,
// the oldest output dropped first. A runtime checks its files every
// LogCheckInterval and before every Logs call, so on disk a log exceeds the
// cap by at most what the container writes in one interval. While no
// Runtime runs, nothing enforces the cap; the first check after a restart
// brings the files back under it.

// Rotate applies the cap to one shim-written log file.
func Rotate(path string, capBytes int64) error {
	half := capBytes / 2
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	// Rotations of one file, from this runtime's keeper and Logs or from
	// another runtime instance, take turns; the shim's writes do not lock.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("isolation: lock log: %w", err)
	}
	defer func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN) }()
	st, err := f.Stat()
	if err != nil || st.Size() <= half {
		return err
	}
	size := st.Size()
	block := int64(4096)
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Blksize > 0 {
		block = int64(sys.Blksize)
	}
	if drop := (size - half) / block * block; drop > 0 {
		err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_COLLAPSE_RANGE, 0, drop)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("isolation: cut log head: %w", err)
		}
	} else if half >= block {
		return nil // less than a block over: wait for more
	}
	return copyTruncate(f, path, size, half)
}

// copyTruncate keeps the newest half of the file in path.1 and empties
// path, copying also what was appended during the copy.
func copyTruncate(f *os.File, path string, size, half int64) error {
	tmp := path + ".1.tmp"
	dst, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	from := size - half
	for i := 0; i < 4; i++ {
		if _, err = io.Copy(dst, io.NewSectionReader(f, from, size-from)); err != nil {
			break
		}
		st, serr := f.Stat()
		if serr != nil || st.Size() == size {
			err = serr
			break
		}
		from, size = size, st.Size()
	}
	if err := errors.Join(err, dst.Close()); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path+".1"); err != nil {
		return err
	}
	return f.Truncate(0)
}

// Open reads a log's older generation followed by its current file.
// A log never written reads as empty.
func Open(path string) (io.ReadCloser, error) {
	var files []*os.File
	for _, p := range []string{path + ".1", path} {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			for _, f := range files {
				_ = f.Close()
			}
			return nil, fmt.Errorf("isolation: open log: %w", err)
		}
		files = append(files, f)
	}
	readers := make([]io.Reader, len(files))
	for i, f := range files {
		readers[i] = f
	}
	return &multiReadCloser{Reader: io.MultiReader(readers...), files: files}, nil
}

type multiReadCloser struct {
	io.Reader
	files []*os.File
}

func (m *multiReadCloser) Close() error {
	var errs []error
	for _, f := range m.files {
		errs = append(errs, f.Close())
	}
	m.files = nil
	return errors.Join(errs...)
}

// Remove deletes a log and its older generation.
func Remove(path string) error {
	var errs []error
	for _, p := range []string{path, path + ".1", path + ".1.tmp"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Capped is a log file this process writes itself (the Process
// runtime): the same policy, but rotation renames the file, so nothing is
// lost.
type Capped struct {
	mu       sync.Mutex
	path     string
	capBytes int64
	f        *os.File
	size     int64
}

func NewCapped(path string, capBytes int64) (*Capped, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("isolation: log file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("isolation: log file: %w", err)
	}
	return &Capped{path: path, capBytes: capBytes, f: f, size: st.Size()}, nil
}

func (l *Capped) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, os.ErrClosed
	}
	half := l.capBytes / 2
	written := 0
	for len(p) > 0 {
		room := half - l.size
		if room <= 0 {
			if err := l.rotate(); err != nil {
				return written, err
			}
			room = half
		}
		chunk := p
		if int64(len(chunk)) > room {
			chunk = chunk[:room]
		}
		n, err := l.f.Write(chunk)
		written += n
		l.size += int64(n)
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

func (l *Capped) rotate() error {
	if err := l.f.Close(); err != nil {
		return err
	}
	l.f = nil
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	l.f, l.size = f, 0
	return nil
}

func (l *Capped) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
