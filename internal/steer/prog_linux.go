package steer

// The selection program, attached to a reuseport group as
// BPF_SK_REUSEPORT_SELECT_OR_MIGRATE. For every new connection (and every
// queued one of a closing socket) it picks the socket of an eligible slot:
//
//	list := current[0]                  // 0 or 1: the list the parent wrote last
//	base := list * (max + 1)
//	n := lists[base]                    // how many slots are eligible
//	slot := lists[base + 1 + hash % n]  // one of them, by the kernel's hash
//	bpf_sk_select_reuseport(ctx, socks, &slot, 0)
//	return SK_PASS
//
// With no list, no eligible slot (n = 0) or a slot whose socket is gone,
// it passes without a selection and the kernel falls back to its own hash.
// The parent writes the list that is not current and then flips current (a
// single 32-bit write), so that a connection never sees half a list.

// Offset of sk_reuseport_md.hash (linux/bpf.h): data, data_end (8 bytes
// each), then len, eth_protocol, ip_protocol, bind_inany (4 each).
const offHash = 32

func selectProgram(current, lists, socks, max int) program {
	var p program
	p.mov(r6, r1) // ctx
	// r7 = current[0] * (max+1): the list's base key
	p.storeImm(r10, -4, 0)
	lookup(&p, current)
	p.loadW(r7, r0, 0)
	p.mulImm(r7, int32(max+1))
	// r8 = lists[base]: n
	p.storeW(r10, -4, r7)
	lookup(&p, lists)
	p.loadW(r8, r0, 0)
	p.jeqImm(r8, 0, "pass")
	// r9 = lists[base + 1 + hash % n]: the slot
	p.loadW(r9, r6, offHash)
	p.mod32(r9, r8)
	p.addImm(r9, 1)
	p.add(r9, r7)
	p.storeW(r10, -4, r9)
	lookup(&p, lists)
	p.loadW(r9, r0, 0)
	// bpf_sk_select_reuseport(ctx, socks, &slot, 0)
	p.storeW(r10, -8, r9)
	p.mov(r1, r6)
	p.loadMap(r2, socks)
	p.mov(r3, r10)
	p.addImm(r3, -8)
	p.movImm(r4, 0)
	p.call(helperSkSelectReuseport)
	p.label("pass")
	p.movImm(r0, skPass)
	p.exit()
	return p
}

// lookup emits r0 = map[*(u32 *)(fp - 4)], and a jump to "pass" when the
// key has no element.
func lookup(p *program, m int) {
	p.loadMap(r1, m)
	p.mov(r2, r10)
	p.addImm(r2, -4)
	p.call(helperMapLookupElem)
	p.jeqImm(r0, 0, "pass")
}
