package actors

import (
	"context"
	"fmt"
	"log/slog"
)

// minLevel wraps a handler so that records below level are dropped:
// protoactor logs every actor start at Info.
func minLevel(h slog.Handler, level slog.Level) slog.Handler {
	return &levelHandler{Handler: h, level: level}
}

type levelHandler struct {
	slog.Handler
	level slog.Level
}

func (h *levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h *levelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &levelHandler{Handler: h.Handler.WithAttrs(attrs), level: h.level}
}

func (h *levelHandler) WithGroup(name string) slog.Handler {
	return &levelHandler{Handler: h.Handler.WithGroup(name), level: h.level}
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }
