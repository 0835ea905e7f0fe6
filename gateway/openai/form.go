package openai

import (
	"errors"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kiln-project/kiln/gateway/apierr"
)

// Limits of a multipart request besides the body limit.
const (
	// MaxFormValue bounds one text field (a prompt is at most 4000
	// characters; the rest are short).
	MaxFormValue = 64 << 10
	// MaxFormParts bounds the number of parts of one request.
	MaxFormParts = 64
	// MaxEditImages is how many images an edit may name (OpenAI takes up to
	// 16 reference images; Kiln edits one).
	MaxEditImages = 1
)

// form is a parsed multipart request: its files (image[] counts as
// image) and text values.
type form struct {
	files  map[string][][]byte
	values map[string]string
}

// parseForm reads a multipart/form-data body within maxBody bytes, each
// file part within maxFile bytes and each text part within MaxFormValue.
// fileFields and textFields are the accepted names; anything else is an
// unknown_field error, as the JSON endpoint answers unknown members.
func parseForm(w http.ResponseWriter, r *http.Request, maxBody, maxFile int64, fileFields, textFields []string) (*form, *apierr.Error) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, apierr.Invalid("", "the request must be multipart/form-data (image and mask as files, the other parameters as fields)")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	mr := multipart.NewReader(r.Body, params["boundary"])
	isFile, isText := map[string]bool{}, map[string]bool{}
	for _, n := range fileFields {
		isFile[n], isFile[n+"[]"] = true, true
	}
	for _, n := range textFields {
		isText[n] = true
	}
	f := &form{files: map[string][][]byte{}, values: map[string]string{}}
	for parts := 0; ; parts++ {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, formError(err, maxBody, "")
		}
		if parts >= MaxFormParts {
			return nil, apierr.Limit("", "the form has more than %d parts", MaxFormParts)
		}
		name := part.FormName()
		switch {
		case isFile[name]:
			data, aerr := readPart(part, maxFile, maxBody, name)
			if aerr != nil {
				return nil, aerr
			}
			key := strings.TrimSuffix(name, "[]")
			f.files[key] = append(f.files[key], data)
		case isText[name]:
			if part.FileName() != "" {
				return nil, apierr.Invalid(name, "%s must be a form field, not a file", name)
			}
			data, aerr := readPart(part, MaxFormValue, maxBody, name)
			if aerr != nil {
				return nil, aerr
			}
			if !utf8.Valid(data) {
				return nil, apierr.Invalid(name, "%s is not valid UTF-8", name)
			}
			if _, dup := f.values[name]; dup {
				return nil, apierr.Invalid(name, "%s is given more than once", name)
			}
			f.values[name] = string(data)
		case name == "":
			return nil, apierr.Invalid("", "a form part has no name")
		default:
			return nil, &apierr.Error{Status: http.StatusBadRequest, Code: apierr.CodeUnknownField, Field: name,
				Message: "unknown parameter " + strconv.Quote(name)}
		}
		part.Close()
	}
	return f, nil
}

// readPart reads one part within limit bytes.
func readPart(p *multipart.Part, limit, maxBody int64, name string) ([]byte, *apierr.Error) {
	data, err := io.ReadAll(io.LimitReader(p, limit+1))
	if err != nil {
		return nil, formError(err, maxBody, name)
	}
	if int64(len(data)) > limit {
		return nil, apierr.New(http.StatusRequestEntityTooLarge, apierr.CodeTooLarge, name, "%s exceeds %d bytes", name, limit)
	}
	return data, nil
}

// formError describes a failure to read the form.
func formError(err error, maxBody int64, name string) *apierr.Error {
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return apierr.New(http.StatusRequestEntityTooLarge, apierr.CodeTooLarge, name, "request body exceeds %d bytes", maxBody)
	}
	return apierr.Invalid(name, "reading the multipart form: %v", err)
}

// Typed readers of form values; each leaves its target alone when the
// field is absent.

func (f *form) str(name string, to *string) { *to = f.values[name] }

func (f *form) intp(name string, to **int) *apierr.Error {
	s, ok := f.values[name]
	if !ok {
		return nil
	}
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return apierr.Invalid(name, "%s must be an integer, got %q", name, s)
	}
	*to = &v
	return nil
}

func (f *form) uintp(name string, to **uint64) *apierr.Error {
	s, ok := f.values[name]
	if !ok {
		return nil
	}
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return apierr.Invalid(name, "%s must be a non-negative integer, got %q", name, s)
	}
	*to = &v
	return nil
}

func (f *form) floatp(name string, to **float64) *apierr.Error {
	s, ok := f.values[name]
	if !ok {
		return nil
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return apierr.Invalid(name, "%s must be a number, got %q", name, s)
	}
	*to = &v
	return nil
}

func (f *form) boolean(name string, to *bool) *apierr.Error {
	s, ok := f.values[name]
	if !ok {
		return nil
	}
	v, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return apierr.Invalid(name, "%s must be true or false, got %q", name, s)
	}
	*to = v
	return nil
}

// first returns the first error of several form reads.
func first(errs ...*apierr.Error) *apierr.Error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
