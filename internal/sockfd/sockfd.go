// Package sockfd duplicates the descriptor of a socket without the blocking
// trap of File.
//
// [net.TCPListener.File] and [net.TCPConn.File] return a duplicate whose Fd
// method switches the open file description to blocking mode, and that
// switch is visible through every descriptor that shares the description,
// including the live listener: its Accept then blocks an OS thread in the
// accept system call, where Close cannot interrupt it. os/exec calls Fd on every file in
// Cmd.ExtraFiles, so passing such a file to a child is enough to trigger it.
// [Dup] duplicates the descriptor with fcntl(F_DUPFD_CLOEXEC) inside
// SyscallConn().Control instead, and wraps it with [os.NewFile], whose Fd
// leaves the mode alone.
//
// Dup is for unix systems that have F_DUPFD_CLOEXEC, which is all of them
// but AIX; elsewhere it fails with an error that satisfies
// errors.Is(err, errors.ErrUnsupported).
package sockfd
