// Package steer lets the parent decide which sockets of a reuseport group
// the kernel may give a new connection: an SK_REUSEPORT eBPF program
// attached to the group picks, by the kernel's hash, among the slots the
// parent lists as eligible, and, attached as SELECT_OR_MIGRATE, it also
// moves the queue of a socket that closes to an eligible one, whatever
// net.ipv4.tcp_migrate_req says. Linux 5.14 and later; loading needs
// CAP_BPF (or root); the descriptors it keeps go on working after the
// process drops its privileges.
package steer

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxSlots is how many slots a group can steer among.
const MaxSlots = 1024

// Group steers one reuseport group: the program, the socket array (a slot
// keeps its index for its life: a socket can sit in one element only), and
// the two lists of eligible slots. Its methods are for one goroutine.
type Group struct {
	prog, socks, lists, current int
	cur                         uint32 // the list the program reads
}

// Errors that say why steering is not available; they wrap the errno.
var (
	ErrPermission  = errors.New("steer: loading an eBPF program needs CAP_BPF (or root)")
	ErrUnsupported = errors.New("steer: the kernel has no SK_REUSEPORT select-or-migrate programs (Linux 5.14+)")
)

// New creates the maps and loads the program.
func New() (*Group, error) {
	g := &Group{prog: -1, socks: -1, lists: -1, current: -1}
	var err error
	if g.socks, err = mapCreate(unix.BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, 4, 8, MaxSlots); err != nil {
		return nil, explain("creating the socket array", err)
	}
	if g.lists, err = mapCreate(unix.BPF_MAP_TYPE_ARRAY, 4, 4, 2*(MaxSlots+1)); err != nil {
		g.Close()
		return nil, explain("creating the lists", err)
	}
	if g.current, err = mapCreate(unix.BPF_MAP_TYPE_ARRAY, 4, 4, 1); err != nil {
		g.Close()
		return nil, explain("creating the list index", err)
	}
	code, err := selectProgram(g.current, g.lists, g.socks, MaxSlots).assemble()
	if err != nil {
		g.Close()
		return nil, err
	}
	if g.prog, err = progLoad(code); err != nil {
		g.Close()
		return nil, explain("loading the program", err)
	}
	return g, nil
}

// FDs returns the group's descriptors (the program, then its maps), for
// a parent that hands the group on: to its fd store, or to the parent it
// re-executes. The group keeps them; Adopt makes a group of copies.
func (g *Group) FDs() []int { return []int{g.prog, g.socks, g.lists, g.current} }

// Adopt returns the group whose descriptors FDs returned, in that order,
// as another process received them: it takes them over. A socket of its
// array cannot join another array, so a parent that inherits steered
// sockets must steer them with the group they are in.
func Adopt(fds []int) (*Group, error) {
	if len(fds) != 4 {
		return nil, fmt.Errorf("steer: a group is 4 descriptors, not %d", len(fds))
	}
	g := &Group{prog: fds[0], socks: fds[1], lists: fds[2], current: fds[3]}
	var cur uint32
	if err := mapLookup(g.current, 0, unsafe.Pointer(&cur)); err != nil {
		return nil, fmt.Errorf("steer: adopting a group: %w", err)
	}
	g.cur = cur & 1
	return g, nil
}

func explain(what string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w: %s: %w", ErrPermission, what, err)
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("%w: %s: %w", ErrUnsupported, what, err)
	}
	return fmt.Errorf("steer: %s: %w", what, err)
}

// Attach attaches the program to the reuseport group of the listening
// socket fd. The group keeps it for as long as any of its sockets lives.
func (g *Group) Attach(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, g.prog); err != nil {
		return explain("attaching the program", os.NewSyscallError("setsockopt", err))
	}
	return nil
}

// Add puts the listening socket fd at index slot of the socket array. A
// socket that closes leaves the array by itself.
func (g *Group) Add(slot, fd int) error {
	if slot < 0 || slot >= MaxSlots {
		return fmt.Errorf("steer: slot index %d out of 0..%d", slot, MaxSlots-1)
	}
	err := mapUpdate(g.socks, uint32(slot), uint64(fd))
	if errors.Is(err, unix.EBUSY) {
		// In an array already: fine if it is this one, at this index
		// (an adopted group), as the socket's cookie says.
		var cookie uint64
		mine, cerr := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		if cerr == nil && mapLookup(g.socks, uint32(slot), unsafe.Pointer(&cookie)) == nil && cookie == mine {
			return nil
		}
	}
	return err
}

// Remove takes index slot out of the socket array; take it out of the
// eligible list first, or the kernel's fallback hash still picks it.
func (g *Group) Remove(slot int) error {
	err := mapDelete(g.socks, uint32(slot))
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// SetEligible makes slots the ones the kernel may pick. An empty list lets
// the kernel's own hash choose among every socket of the group.
func (g *Group) SetEligible(slots []int) error {
	if len(slots) > MaxSlots {
		return fmt.Errorf("steer: %d eligible slots, at most %d", len(slots), MaxSlots)
	}
	next := g.cur ^ 1
	base := next * (MaxSlots + 1)
	for i, s := range slots {
		if err := mapUpdate32(g.lists, base+1+uint32(i), uint32(s)); err != nil {
			return err
		}
	}
	if err := mapUpdate32(g.lists, base, uint32(len(slots))); err != nil {
		return err
	}
	if err := mapUpdate32(g.current, 0, next); err != nil {
		return err
	}
	g.cur = next
	return nil
}

// Close releases the maps and the program; a group they are attached to
// keeps them until its last socket closes.
func (g *Group) Close() error {
	for _, fd := range []*int{&g.prog, &g.socks, &g.lists, &g.current} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	return nil
}

// The bpf(2) calls, with the parts of union bpf_attr they use.

func bpf(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	runtime.KeepAlive(attr)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

type mapCreateAttr struct {
	mapType, keySize, valueSize, maxEntries, flags uint32
}

func mapCreate(typ, key, value, entries uint32) (int, error) {
	a := mapCreateAttr{mapType: typ, keySize: key, valueSize: value, maxEntries: entries}
	fd, err := bpf(unix.BPF_MAP_CREATE, unsafe.Pointer(&a), unsafe.Sizeof(a))
	if err == nil {
		unix.CloseOnExec(fd)
	}
	return fd, err
}

type mapElemAttr struct {
	fd         uint32
	_          uint32
	key, value uint64 // pointers
	flags      uint64
}

func mapUpdate(m int, key uint32, value uint64) error { return update(m, key, unsafe.Pointer(&value)) }

func mapUpdate32(m int, key, value uint32) error { return update(m, key, unsafe.Pointer(&value)) }

func update(m int, key uint32, value unsafe.Pointer) error {
	a := mapElemAttr{fd: uint32(m), key: uint64(uintptr(unsafe.Pointer(&key))), value: uint64(uintptr(value))}
	_, err := bpf(unix.BPF_MAP_UPDATE_ELEM, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(&key)
	runtime.KeepAlive(value)
	if err != nil {
		return fmt.Errorf("steer: map update: %w", err)
	}
	return nil
}

func mapLookup(m int, key uint32, value unsafe.Pointer) error {
	a := mapElemAttr{fd: uint32(m), key: uint64(uintptr(unsafe.Pointer(&key))), value: uint64(uintptr(value))}
	_, err := bpf(unix.BPF_MAP_LOOKUP_ELEM, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(&key)
	runtime.KeepAlive(value)
	return err
}

func mapDelete(m int, key uint32) error {
	a := mapElemAttr{fd: uint32(m), key: uint64(uintptr(unsafe.Pointer(&key)))}
	_, err := bpf(unix.BPF_MAP_DELETE_ELEM, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(&key)
	return err
}

type progLoadAttr struct {
	progType, insnCnt  uint32
	insns, license     uint64
	logLevel, logSize  uint32
	logBuf             uint64
	kernVersion, flags uint32
	name               [16]byte
	ifindex            uint32
	attachType         uint32
}

var license = []byte("Dual MIT/GPL\x00")

// progLoad loads the program; when the verifier refuses it, it loads it
// again with the verifier's log and puts the log's end into the error.
func progLoad(code []byte) (int, error) {
	a := progLoadAttr{
		progType:   unix.BPF_PROG_TYPE_SK_REUSEPORT,
		insnCnt:    uint32(len(code) / 8),
		insns:      uint64(uintptr(unsafe.Pointer(&code[0]))),
		license:    uint64(uintptr(unsafe.Pointer(&license[0]))),
		attachType: unix.BPF_SK_REUSEPORT_SELECT_OR_MIGRATE,
	}
	copy(a.name[:], "forkline_steer")
	fd, err := bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(code)
	if err == nil {
		unix.CloseOnExec(fd)
		return fd, nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EACCES) {
		return -1, err
	}
	log := make([]byte, 64<<10)
	a.logLevel, a.logSize, a.logBuf = 1, uint32(len(log)), uint64(uintptr(unsafe.Pointer(&log[0])))
	_, err2 := bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(code)
	runtime.KeepAlive(log)
	if err2 == nil {
		return -1, err // loads with a log and not without: report the first error
	}
	text := string(log[:clen(log)])
	if len(text) > 600 {
		text = "..." + text[len(text)-600:]
	}
	return -1, fmt.Errorf("%w (verifier: %s)", err, text)
}

func clen(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}
