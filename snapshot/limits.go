package snapshot

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
)

// maxName is the longest user or session name a blob is sized for (the
// wire's names are at most 64 characters).
const maxName = 64

// CheckLimits reports whether every session state whose memento is at most
// maxMemento bytes of JSON and whose phase is at most maxPhase bytes seals
// within MaxBlob. A broker whose limits fail it would accept a remember it
// then cannot seal: the device would stop getting snapshots. Call it where
// the limits are configured, so raising them past the bound is an error at
// start-up rather than at the first large memento.
func CheckLimits(maxMemento, maxPhase int) error {
	if maxMemento < 2 || maxPhase < 0 {
		return fmt.Errorf("snapshot: limits must be positive (memento %d, phase %d)", maxMemento, maxPhase)
	}
	if err := sealWorst(maxMemento, maxPhase); err != nil {
		lo, hi := 1, maxMemento // sealWorst(lo) fits or lo is 1; sealWorst(hi) does not
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			if sealWorst(mid, maxPhase) == nil {
				lo = mid
			} else {
				hi = mid
			}
		}
		return fmt.Errorf("snapshot: a memento of %d bytes with a phase of %d bytes does not fit in a %d-byte blob; with that phase limit the memento limit can be at most %d bytes: %w",
			maxMemento, maxPhase, MaxBlob, lo, err)
	}
	return nil
}

// sealWorst seals the largest state the limits allow: every field at its
// longest, and a phase of characters JSON escapes to six bytes each.
func sealWorst(maxMemento, maxPhase int) error {
	if maxMemento < 2 {
		return ErrTooLarge
	}
	// Issued and Expires at their longest too: nine digits of nanoseconds.
	now := time.Date(2999, 12, 31, 22, 59, 59, 999999999, time.UTC)
	s := &Sealer{keys: []Key{{ID: strings.Repeat("k", maxKeyID)}}, ttl: time.Hour, now: func() time.Time { return now }}
	zone := time.FixedZone("worst", -(12*60+59)*60)
	when := time.Date(9999, 12, 31, 23, 59, 59, 999999999, zone)
	st := State{
		Nonce:       strings.Repeat("n", 64),
		Memento:     json.RawMessage(`"` + strings.Repeat("x", maxMemento-2) + `"`),
		Phase:       strings.Repeat("\x01", maxPhase),
		FirstBegin:  when,
		Deadline:    when,
		LastCallSeq: math.MaxUint64,
		Acked:       math.MaxUint64,
		NextNotify:  math.MaxUint64,
		Policy:      json.RawMessage(fmt.Sprintf(`{"mode":"exclusive","window":%d,"liveness":%d}`, int64(math.MaxInt64), int64(math.MaxInt64))),
	}
	name := strings.Repeat("u", maxName)
	_, err := s.Seal(name, name, math.MaxUint64, st)
	return err
}
