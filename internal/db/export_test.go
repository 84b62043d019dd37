package db

import (
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

// ScansUUIDsInBinary reports whether m scans a binary uuid straight into
// a uuid.UUID, with uuidCodec's plan.
func ScansUUIDsInBinary(m *pgtype.Map) bool {
	var u uuid.UUID
	_, ok := m.PlanScan(pgtype.UUIDOID, pgtype.BinaryFormatCode, &u).(scanBinaryUUID)
	return ok
}
