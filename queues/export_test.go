package queues

// Test access to the stored row formats.

// DecodeEntryRow reads the stored entry row v of seq.
func DecodeEntryRow(seq uint64, v []byte) (Entry, error) { return decodeEntry(seq, v) }

// DecodeStateRow reads a stored meta row: Meta and the scan starts.
func DecodeStateRow(v []byte) (m Meta, first, expiryFrom uint64, err error) {
	s, err := decodeState(v)
	return s.Meta, s.First, s.ExpiryFrom, err
}

// EncodeEntryRow is e's stored row.
func EncodeEntryRow(e Entry) []byte { return encodeEntry(e) }

// EncodeStateRow is the stored meta row of m and the scan starts.
func EncodeStateRow(m Meta, first, expiryFrom uint64) []byte {
	return encodeState(state{Meta: m, First: first, ExpiryFrom: expiryFrom})
}

// DecodeMessageSlow is DecodeMessage without its fast path: the reference
// the fuzz test holds the fast path to.
func DecodeMessageSlow(payload []byte) (Message, error) { return decodeMessageSlow(payload) }
