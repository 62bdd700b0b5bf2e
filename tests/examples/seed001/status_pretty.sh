curl http://localhost:8080/api/batch/status/JOB_ID | python3 -m json.tool
