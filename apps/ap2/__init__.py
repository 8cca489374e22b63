"""AP2: classifies weather-related tweets as raining / not raining with a transformer encoder."""
