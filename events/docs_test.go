package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/wxcombine/orderworker/events"
)

// The wire contract's reference, docs/events.md, is read by the tests: every
// JSON example decodes strictly into the type of its section, and every JSON
// field of each type is named in its section. Nothing is copied from it by
// hand, so the page and the types cannot drift apart unnoticed.

const eventsDoc = "../docs/events.md"

// docTypes are the sections of docs/events.md that document a type, by
// heading, with a zero value of the type.
var docTypes = map[string]any{
	"CreateOrderJob":   events.CreateOrderJob{},
	"PrepayCreated":    events.PrepayCreated{},
	"PrepayFailed":     events.PrepayFailed{},
	"PaymentSucceeded": events.PaymentSucceeded{},
	"DeadLetter":       events.DeadLetter{},
}

// docSection is the text of one "## " section and its ```json blocks.
type docSection struct {
	heading string
	text    string
	blocks  []string
}

func readDoc(t *testing.T) map[string]*docSection {
	t.Helper()
	b, err := os.ReadFile(eventsDoc)
	if err != nil {
		t.Fatalf("read %s: %v", eventsDoc, err)
	}
	sections := map[string]*docSection{}
	var cur *docSection
	var block *strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case block != nil && strings.TrimSpace(line) == "```":
			cur.blocks = append(cur.blocks, block.String())
			block = nil
		case block != nil:
			block.WriteString(line + "\n")
		case strings.HasPrefix(line, "## "):
			cur = &docSection{heading: strings.TrimSpace(strings.TrimPrefix(line, "## "))}
			sections[cur.heading] = cur
		case cur != nil && strings.TrimSpace(line) == "```json":
			block = &strings.Builder{}
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	return sections
}

// decodeStrict decodes every JSON value of a block into fresh values of the
// type of zero, refusing unknown fields; it answers how many it decoded.
func decodeStrict(block string, zero any) (int, error) {
	dec := json.NewDecoder(strings.NewReader(block))
	dec.DisallowUnknownFields()
	n := 0
	for {
		v := reflect.New(reflect.TypeOf(zero)).Interface()
		err := dec.Decode(v)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

func TestEventsDoc_examplesDecode(t *testing.T) {
	sections := readDoc(t)
	for heading, zero := range docTypes {
		s := sections[heading]
		if s == nil {
			t.Errorf("%s has no section %q", eventsDoc, "## "+heading)
			continue
		}
		if len(s.blocks) == 0 {
			t.Errorf("section %s has no JSON example", heading)
		}
		for i, block := range s.blocks {
			n, err := decodeStrict(block, zero)
			if err != nil {
				t.Errorf("section %s, example %d: does not decode strictly into %T: %v", heading, i+1, zero, err)
				continue
			}
			if n == 0 {
				t.Errorf("section %s, example %d holds no JSON value", heading, i+1)
			}
			if heading == "CreateOrderJob" {
				// The workers' own decoder, with its stricter rules.
				if _, err := events.DecodeJob([]byte(block), 0); err != nil {
					t.Errorf("section %s, example %d: DecodeJob: %v", heading, i+1, err)
				}
			}
		}
	}
}

// jsonFields answers the JSON names of t's fields and, recursively, of the
// fields of the package's own struct types it holds (types of other
// packages, such as wechat.CombineOrderRequest, are documented there).
func jsonFields(t reflect.Type, pkg string, seen map[reflect.Type]bool) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.PkgPath() != pkg || seen[t] {
		return nil
	}
	seen[t] = true
	var names []string
	for f := range t.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" || !f.IsExported() {
			continue
		}
		names = append(names, tag)
		names = append(names, jsonFields(f.Type, pkg, seen)...)
	}
	return names
}

func TestEventsDoc_everyFieldDocumented(t *testing.T) {
	sections := readDoc(t)
	pkg := reflect.TypeOf(events.DeadLetter{}).PkgPath()
	for heading, zero := range docTypes {
		s := sections[heading]
		if s == nil {
			continue // reported by TestEventsDoc_examplesDecode
		}
		all := s.text + strings.Join(s.blocks, "")
		for _, name := range jsonFields(reflect.TypeOf(zero), pkg, map[reflect.Type]bool{}) {
			// Named in the prose or a table (`name`), or a key of an example.
			re := regexp.MustCompile("`" + regexp.QuoteMeta(name) + "`|\"" + regexp.QuoteMeta(name) + "\"\\s*:")
			if !re.MatchString(all) {
				t.Errorf("field %q of %T is not documented in the %s section of %s", name, zero, heading, eventsDoc)
			}
		}
	}
}

// TestEventsDoc_reader checks the reader on a page of known shape, so that
// a page it misreads cannot pass for a documented one.
func TestEventsDoc_reader(t *testing.T) {
	n, err := decodeStrict("{\"reason\":\"malformed\"}\n{\"reason\":\"invalid\"}\n", events.DeadLetter{})
	if err != nil || n != 2 {
		t.Errorf("decodeStrict(two values) = %d, %v, want 2, nil", n, err)
	}
	if _, err := decodeStrict(`{"reason":"x","extra":1}`, events.DeadLetter{}); err == nil {
		t.Error("decodeStrict accepted an unknown field")
	}
	fields := jsonFields(reflect.TypeOf(events.PaymentSucceeded{}), reflect.TypeOf(events.DeadLetter{}).PkgPath(), map[reflect.Type]bool{})
	for _, want := range []string{"combine_transaction_id", "sub_orders", "transaction_id", "payer_amount"} {
		if !bytes.Contains([]byte(strings.Join(fields, " ")), []byte(want)) {
			t.Errorf("jsonFields(PaymentSucceeded) = %v, missing %s", fields, want)
		}
	}
}
