package steer

import (
	"encoding/binary"
	"fmt"
)

// A few eBPF instructions, emitted by hand: the program is some forty
// instructions, and a dependency that assembles them (github.com/cilium/ebpf,
// 1.7 MB and 14 packages in every binary that imports prefork) is not worth
// it. Jumps name their target by label and are resolved in one pass, so
// that no offset is counted by hand; the kernel's verifier checks the rest
// at load time, and the tests load it.

type reg uint8

const (
	r0 reg = iota
	r1
	r2
	r3
	r4
	r5
	r6
	r7
	r8
	r9
	r10 // the frame pointer
)

// Opcodes (linux/bpf.h, linux/bpf_common.h).
const (
	opMov64Reg  = 0xbf // dst = src
	opMov64Imm  = 0xb7 // dst = imm
	opAdd64Imm  = 0x07 // dst += imm
	opAdd64Reg  = 0x0f // dst += src
	opMul64Imm  = 0x27 // dst *= imm
	opMod32Reg  = 0x9c // dst = (u32)dst % (u32)src
	opLdxW      = 0x61 // dst = *(u32 *)(src + off)
	opStW       = 0x62 // *(u32 *)(dst + off) = imm
	opStxW      = 0x63 // *(u32 *)(dst + off) = src
	opLdImm64   = 0x18 // dst = imm64 (two slots); src = pseudoMapFD: a map's fd
	opJeqImm    = 0x15 // if dst == imm goto off
	opCall      = 0x85 // call helper imm
	opExit      = 0x95
	pseudoMapFD = 1

	helperMapLookupElem     = 1
	helperSkSelectReuseport = 82
	skPass                  = 1
)

type insn struct {
	code     uint8
	dst, src reg
	off      int16
	imm      int32
	target   string // a jump's label
	label    string // this instruction's label
	wide     bool   // a two-slot instruction
}

type program []insn

func (p *program) emit(i insn) { *p = append(*p, i) }

func (p *program) mov(dst, src reg)          { p.emit(insn{code: opMov64Reg, dst: dst, src: src}) }
func (p *program) movImm(dst reg, imm int32) { p.emit(insn{code: opMov64Imm, dst: dst, imm: imm}) }
func (p *program) addImm(dst reg, imm int32) { p.emit(insn{code: opAdd64Imm, dst: dst, imm: imm}) }
func (p *program) add(dst, src reg)          { p.emit(insn{code: opAdd64Reg, dst: dst, src: src}) }
func (p *program) mulImm(dst reg, imm int32) { p.emit(insn{code: opMul64Imm, dst: dst, imm: imm}) }
func (p *program) mod32(dst, src reg)        { p.emit(insn{code: opMod32Reg, dst: dst, src: src}) }
func (p *program) loadW(dst, src reg, off int16) {
	p.emit(insn{code: opLdxW, dst: dst, src: src, off: off})
}
func (p *program) storeImm(dst reg, off int16, imm int32) {
	p.emit(insn{code: opStW, dst: dst, off: off, imm: imm})
}
func (p *program) storeW(dst reg, off int16, src reg) {
	p.emit(insn{code: opStxW, dst: dst, src: src, off: off})
}
func (p *program) loadMap(dst reg, fd int) {
	p.emit(insn{code: opLdImm64, dst: dst, src: pseudoMapFD, imm: int32(fd), wide: true})
}
func (p *program) jeqImm(dst reg, imm int32, target string) {
	p.emit(insn{code: opJeqImm, dst: dst, imm: imm, target: target})
}
func (p *program) call(helper int32) { p.emit(insn{code: opCall, imm: helper}) }
func (p *program) exit()             { p.emit(insn{code: opExit}) }
func (p *program) label(name string) { p.emit(insn{label: name}) }

// assemble resolves the labels and returns the instructions' bytes.
func (p program) assemble() ([]byte, error) {
	at := make(map[string]int) // label -> slot
	slot := 0
	for _, i := range p {
		if i.label != "" {
			at[i.label] = slot
			continue
		}
		slot++
		if i.wide {
			slot++
		}
	}
	var out []byte
	slot = 0
	for _, i := range p {
		if i.label != "" {
			continue
		}
		if i.target != "" {
			t, ok := at[i.target]
			if !ok {
				return nil, fmt.Errorf("steer: no label %q", i.target)
			}
			i.off = int16(t - (slot + 1)) // relative to the next instruction
		}
		out = appendInsn(out, i.code, i.dst, i.src, i.off, i.imm)
		slot++
		if i.wide {
			out = appendInsn(out, 0, 0, 0, 0, 0) // the upper 32 bits: 0
			slot++
		}
	}
	return out, nil
}

func appendInsn(b []byte, code uint8, dst, src reg, off int16, imm int32) []byte {
	b = append(b, code, byte(dst)|byte(src)<<4)
	b = binary.LittleEndian.AppendUint16(b, uint16(off))
	return binary.LittleEndian.AppendUint32(b, uint32(imm))
}
