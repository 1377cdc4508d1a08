package bus

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-platform/meridian"
)

// The extension attributes of a dead letter. A dead letter is the original
// event — same id, source, type, subject, data and extensions (trace
// context included) — with these added, published to the dead-letter
// topic; any CloudEvents tool can read it.
const (
	ExtDLQTopic      = "dlqtopic"      // the topic it was published to
	ExtDLQGroup      = "dlqgroup"      // the group that gave up on it ("" for a private subscription)
	ExtDLQSequence   = "dlqsequence"   // its sequence in the topic
	ExtDLQPartition  = "dlqpartition"  // its partition in the topic
	ExtDLQReason     = "dlqreason"     // the last error
	ExtDLQDeliveries = "dlqdeliveries" // how many times it was delivered
	ExtDLQAttempts   = "dlqattempts"   // JSON array of Attempt, the latest ones that fit in 4096 bytes
	ExtDLQTime       = "dlqtime"       // when it was dead-lettered, RFC 3339
)

var dlqExts = []string{ExtDLQTopic, ExtDLQGroup, ExtDLQSequence, ExtDLQPartition, ExtDLQReason, ExtDLQDeliveries, ExtDLQAttempts, ExtDLQTime}

// Attempt is one delivery of an event that did not succeed.
type Attempt struct {
	// At is when the attempt ended; zero when no outcome was seen.
	At    time.Time `json:"at,omitzero"`
	Error string    `json:"error"`
}

// NoOutcome is the Error of an attempt whose outcome nobody recorded: the
// member stopped or died with the event in hand, or the handler outran
// AckWait without calling InProgress.
const NoOutcome = "no outcome recorded (member stopped or lost, or ack wait passed without InProgress)"

// DeadLetter is an event a group gave up on.
type DeadLetter struct {
	// Sequence is its position in the dead-letter topic.
	Sequence  uint64 `json:"sequence"`
	Topic     string `json:"topic"`
	Group     string `json:"group"`
	Partition int    `json:"partition"`
	// OriginalSequence is its position in Topic.
	OriginalSequence uint64    `json:"original_sequence"`
	Reason           string    `json:"reason"`
	Deliveries       int       `json:"deliveries"`
	Attempts         []Attempt `json:"attempts"`
	DeadAt           time.Time `json:"dead_at"`
	// Event is the original event, without the dead-letter extensions.
	Event Event `json:"event"`
}

const (
	maxReason = 1024
	maxExt    = 4096
)

// ToEvent is the dead letter as the event published to the dead-letter
// topic. Reasons and attempt errors are cut to fit the extension limits;
// the latest attempts are kept.
func (d DeadLetter) ToEvent() Event {
	e := d.Event
	ext := make(map[string]string, len(e.Extensions)+len(dlqExts))
	for k, v := range e.Extensions {
		ext[k] = v
	}
	ext[ExtDLQTopic] = d.Topic
	ext[ExtDLQGroup] = d.Group
	ext[ExtDLQSequence] = strconv.FormatUint(d.OriginalSequence, 10)
	ext[ExtDLQPartition] = strconv.Itoa(d.Partition)
	ext[ExtDLQReason] = cut(d.Reason, maxReason)
	ext[ExtDLQDeliveries] = strconv.Itoa(d.Deliveries)
	ext[ExtDLQAttempts] = fitAttempts(d.Attempts)
	ext[ExtDLQTime] = d.DeadAt.UTC().Format(time.RFC3339Nano)
	e.Extensions = ext
	return e
}

// fitAttempts encodes the latest attempts that fit in an extension value.
func fitAttempts(as []Attempt) string {
	short := make([]Attempt, len(as))
	for i, a := range as {
		short[i] = Attempt{At: a.At.UTC(), Error: cut(a.Error, 256)}
	}
	for len(short) > 0 {
		b, _ := json.Marshal(short)
		if len(b) <= maxExt {
			return string(b)
		}
		short = short[1:]
	}
	return "[]"
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n-3]
	for len(s) > 0 && !utf8Start(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1] >= 0x80 {
		s = s[:len(s)-1]
	}
	return s + "..."
}

func utf8Start(b byte) bool { return b < 0x80 || b >= 0xC0 }

// ParseDeadLetter reads a dead letter from an event of a dead-letter topic
// stored at seq. The error is invalid and names the extension at fault.
func ParseDeadLetter(e Event, seq uint64) (DeadLetter, error) {
	x := e.Extensions
	d := DeadLetter{Sequence: seq, Topic: x[ExtDLQTopic], Group: x[ExtDLQGroup], Reason: x[ExtDLQReason]}
	if d.Topic == "" {
		return d, meridian.FieldError(ExtDLQTopic, "is missing: not a dead letter")
	}
	var err error
	if d.OriginalSequence, err = strconv.ParseUint(x[ExtDLQSequence], 10, 64); err != nil {
		return d, meridian.FieldError(ExtDLQSequence, "%q is not a sequence", x[ExtDLQSequence])
	}
	if v := x[ExtDLQPartition]; v != "" {
		if d.Partition, err = strconv.Atoi(v); err != nil {
			return d, meridian.FieldError(ExtDLQPartition, "%q is not a number", v)
		}
	}
	if v := x[ExtDLQDeliveries]; v != "" {
		if d.Deliveries, err = strconv.Atoi(v); err != nil {
			return d, meridian.FieldError(ExtDLQDeliveries, "%q is not a number", v)
		}
	}
	if v := x[ExtDLQAttempts]; v != "" {
		if err := json.Unmarshal([]byte(v), &d.Attempts); err != nil {
			return d, meridian.FieldError(ExtDLQAttempts, "is not a JSON array of attempts: %v", err)
		}
	}
	if v := x[ExtDLQTime]; v != "" {
		if d.DeadAt, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return d, meridian.FieldError(ExtDLQTime, "%q is not an RFC 3339 time", v)
		}
	}
	orig := e
	orig.Extensions = nil
	for k, v := range x {
		if !strings.HasPrefix(k, "dlq") || !isDLQExt(k) {
			if orig.Extensions == nil {
				orig.Extensions = make(map[string]string, len(x))
			}
			orig.Extensions[k] = v
		}
	}
	d.Event = orig
	return d, nil
}

func isDLQExt(k string) bool {
	for _, n := range dlqExts {
		if k == n {
			return true
		}
	}
	return false
}

// DedupKey is the dedup key of an event by default: its source and id
// (CloudEvents ids are unique per source only), as "<source> <id>" when
// both are short and plain (no space, quote, '%' or byte outside printable
// ASCII, so the space cannot be ambiguous), else a 22-character hash of
// them.
func DedupKey(source, id string) string {
	if len(source)+len(id) <= 128 && plain(source) && plain(id) {
		return source + " " + id
	}
	h := sha256.New()
	h.Write([]byte(source))
	h.Write([]byte{0})
	h.Write([]byte(id))
	var sum [sha256.Size]byte
	return base64.RawURLEncoding.EncodeToString(h.Sum(sum[:0])[:16])
}

func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == '"' || c == '%' {
			return false
		}
	}
	return true
}

// String is for logs.
func (d DeadLetter) String() string {
	return fmt.Sprintf("%s#%d (%s, group %q, %d deliveries): %s", d.Topic, d.OriginalSequence, d.Event, d.Group, d.Deliveries, d.Reason)
}
