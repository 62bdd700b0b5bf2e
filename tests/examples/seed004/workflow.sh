# Save batch CSV file
cat > dunkirk_batch.csv << 'EOF'
master_file,dub_file,methods,ai_model,description,tags
/mnt/data/amcmurray/_insync_master_files/DunkirkEC_InsideTheCockpit_ProRes.mov,/mnt/data/amcmurray/_outofsync_master_files/DunkirkEC_InsideTheCockpit_ProRes_15sec.mov,"mfcc,ai",wav2vec2,Dunkirk Inside Cockpit sync test,"test,dunkirk,cockpit"
/mnt/data/amcmurray/_insync_master_files/DunkirkEC_TakingToTheAir2_ProRes.mov,/mnt/data/amcmurray/_outofsync_master_files/DunkirkEC_TakingToTheAir2_ProRes_15sec.mov,"onset,spectral",,Dunkirk Taking to Air sync test,"test,dunkirk,air"
/mnt/data/amcmurray/_insync_master_files/DunkirkEC_TheInCameraApproach1_ProRes.mov,/mnt/data/amcmurray/_outofsync_master_files/DunkirkEC_TheInCameraApproach1_ProRes_15sec.mov,ai,wav2vec2,Dunkirk In Camera Approach sync test,"test,dunkirk,camera"
EOF

# Upload batch
BATCH_RESPONSE=$(curl -s -X POST "http://localhost:8000/api/v1/analysis/batch/upload-csv" \
  -F "file=@dunkirk_batch.csv" \
  -F "description=Dunkirk test batch" \
  -F "priority=normal")

echo "Upload Response: $BATCH_RESPONSE"

# Extract batch ID
BATCH_ID=$(echo $BATCH_RESPONSE | jq -r '.batch_id')
echo "Batch ID: $BATCH_ID"
# Start batch processing
START_RESPONSE=$(curl -s -X POST "http://localhost:8000/api/v1/analysis/batch/$BATCH_ID/start" \
  -H "Content-Type: application/json" \
  -d '{
    "parallel_jobs": 2,
    "priority": "normal"
  }')

echo "Start Response: $START_RESPONSE"
# Monitor progress (run in loop)
while true; do
  STATUS_RESPONSE=$(curl -s -X GET "http://localhost:8000/api/v1/analysis/batch/$BATCH_ID/status")
  STATUS=$(echo $STATUS_RESPONSE | jq -r '.status')
  PROGRESS=$(echo $STATUS_RESPONSE | jq -r '.progress')
  
  echo "$(date): Batch Status: $STATUS, Progress: $PROGRESS%"
  
  if [[ "$STATUS" == "completed" || "$STATUS" == "failed" ]]; then
    break
  fi
  
  sleep 10  # Check every 10 seconds
done
# Get final results
RESULTS_RESPONSE=$(curl -s -X GET "http://localhost:8000/api/v1/analysis/batch/$BATCH_ID/results")
echo "Results: $RESULTS_RESPONSE" | jq '.'

# Save results to file
echo $RESULTS_RESPONSE | jq '.' > batch_results_${BATCH_ID}.json
echo "Results saved to batch_results_${BATCH_ID}.json"
