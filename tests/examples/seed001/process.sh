curl -X POST http://localhost:8080/api/batch/process \
  -H "Content-Type: application/json" \
  -d '{
    "gcs_path": "gs://draft-maker-bucket/upcs.txt",
    "create_drafts": true,
    "test_mode": false
  }'
