package sdp

import (
	"reflect"
	"testing"
	"unsafe"
)

// walkStrings calls fn with each string in v, by reflection: the fields
// of structs, the elements of slices other than []byte, what pointers
// point to. It finds what Description.eachString would miss.
func walkStrings(v reflect.Value, fn func(reflect.Value)) {
	switch v.Kind() {
	case reflect.String:
		fn(v)
	case reflect.Struct:
		for i := range v.NumField() {
			walkStrings(v.Field(i), fn)
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.Uint8 {
			for i := range v.Len() {
				walkStrings(v.Index(i), fn)
			}
		}
	case reflect.Pointer:
		if !v.IsNil() {
			walkStrings(v.Elem(), fn)
		}
	case reflect.Map, reflect.Interface:
		panic("walkStrings: " + v.Type().String() + " is not walked")
	}
}

// A Description that Unmarshal returns shares no memory with the
// parsers: all its strings lie in one allocation of their total size (its
// empty ones point nowhere), so that keeping it (a Call keeps its peer's)
// keeps only what it holds, not the scanned text and pion's copies of it,
// each about as large as the whole description.
func TestUnmarshalPacksStrings(t *testing.T) {
	for _, name := range []string{"chrome_offer.txt", "firefox_offer.txt", "lite_border_offer.txt", "rfc3264_offer.txt", "rfc4568_offer.txt", "sip_noice_offer.txt", "sip_sdes_offer.txt"} {
		t.Run(name, func(t *testing.T) {
			data := readTestdata(t, name)
			d, err := Unmarshal(data)
			if err != nil {
				t.Fatal(err)
			}
			lo, hi, total, n := uintptr(0), uintptr(0), 0, 0
			walkStrings(reflect.ValueOf(d).Elem(), func(v reflect.Value) {
				s := v.String()
				p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
				if len(s) == 0 {
					// An empty slice of a buffer points into it, and keeps
					// it alive.
					if p != 0 {
						t.Errorf("an empty string points at %#x", p)
					}
					return
				}
				if n == 0 || p < lo {
					lo = p
				}
				hi = max(hi, p+uintptr(len(s)))
				total += len(s)
				n++
			})
			if n == 0 {
				t.Fatal("no strings in the description")
			}
			if span := int(hi - lo); span != total {
				t.Fatalf("the description's %d strings (%d bytes) span %d bytes of memory, want them packed in one allocation", n, total, span)
			}
		})
	}
}

// eachString visits every string of a Description, whatever the parsed
// descriptions in testdata happen to carry: a Description with every
// slice one long and every pointer set is walked both ways, by
// reflection and by eachString, and they must find the same strings.
func TestEachStringVisitsEveryString(t *testing.T) {
	var d Description
	var fill func(v reflect.Value)
	fill = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Struct:
			for i := range v.NumField() {
				fill(v.Field(i))
			}
		case reflect.Slice:
			if v.Type().Elem().Kind() != reflect.Uint8 {
				v.Set(reflect.MakeSlice(v.Type(), 1, 1))
				fill(v.Index(0))
			}
		case reflect.Pointer:
			v.Set(reflect.New(v.Type().Elem()))
			fill(v.Elem())
		}
	}
	fill(reflect.ValueOf(&d).Elem())
	want := map[uintptr]bool{}
	walkStrings(reflect.ValueOf(&d).Elem(), func(v reflect.Value) { want[v.Addr().Pointer()] = true })
	got := map[uintptr]bool{}
	d.eachString(func(s *string) { got[uintptr(unsafe.Pointer(s))] = true })
	if len(want) == 0 || len(got) != len(want) {
		t.Fatalf("eachString visits %d strings, reflection finds %d", len(got), len(want))
	}
	for p := range want {
		if !got[p] {
			t.Fatalf("eachString misses the string at %#x", p)
		}
	}
}
